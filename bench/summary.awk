# Summarizes bench/out/runs.tsv (scenario kind round requests ticks rps).
#   -v mode=ratio -v a=<scenario:kind> -v b=<scenario:kind>
#        median over rounds of (CPU/request of a) / (CPU/request of b)
#   -v mode=range  ... same, prints min-max of the per-round ratios
#   -v mode=rps   -v a=<scenario:kind>   median requests/s
#   -v mode=us    -v a=<scenario:kind> -v tck=<CLK_TCK>   median CPU microseconds per request
#   -v mode=util  -v a=<scenario:kind> -v tck=<CLK_TCK> -v dur=<seconds>   median CPU share, %
function median(arr, n,    i, j, t) {
	for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
	if (n == 0) return "nan"
	return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
BEGIN { FS = "\t" }
{
	key = $1 ":" $2
	if ($4 > 0) cpr[key, $3] = $5 / $4
	rps[key, $3] = $6
	tk[key, $3] = $5
	rounds[$3] = 1
}
END {
	n = 0
	for (r in rounds) {
		if (mode == "ratio" || mode == "range") {
			if (((a, r) in cpr) && ((b, r) in cpr) && cpr[b, r] > 0) v[++n] = cpr[a, r] / cpr[b, r]
		} else if (mode == "rps") {
			if ((a, r) in rps) v[++n] = rps[a, r]
		} else if (mode == "util") {
			if ((a, r) in tk) v[++n] = tk[a, r] / tck / dur * 100
		} else if (mode == "us") {
			if ((a, r) in cpr) v[++n] = cpr[a, r] / tck * 1e6
		}
	}
	if (n == 0) { print "n/a"; exit }
	if (mode == "range") {
		m = median(v, n)   # sorts v
		printf "%.2f-%.2f\n", v[1], v[n]
	} else if (mode == "ratio") printf "%.2f\n", median(v, n)
	else if (mode == "rps" || mode == "util") printf "%.0f\n", median(v, n)
	else printf "%.1f\n", median(v, n)
}
