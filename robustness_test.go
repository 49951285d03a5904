package tokenauth

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRevocationRace: clients hammer with a token while it is revoked. Every
// request sent after the revoke returned must be refused.
func TestRevocationRace(t *testing.T) {
	g := startGateway(t, "")
	rec, tok := g.create(t, CreateRequest{User: "racer"})
	expectPass(t, g.get(t, "/?token="+tok), "racer")

	var revokedAt atomic.Int64 // unix nanos when Revoke returned; 0 before
	var passedAfter, refusedAfter, passedBefore atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				sentAfterRevoke := revokedAt.Load() != 0
				res, err := client.Get(gatewayURL + "/?token=" + url.QueryEscape(tok))
				if err != nil {
					continue
				}
				res.Body.Close()
				switch {
				case sentAfterRevoke && res.StatusCode == http.StatusOK:
					passedAfter.Add(1)
				case sentAfterRevoke:
					refusedAfter.Add(1)
				case res.StatusCode == http.StatusOK:
					passedBefore.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := g.store.Revoke(t.Context(), rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	revokedAt.Store(time.Now().UnixNano())
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("before revoke: %d passed; after: %d refused, %d passed", passedBefore.Load(), refusedAfter.Load(), passedAfter.Load())
	if passedBefore.Load() == 0 || refusedAfter.Load() == 0 {
		t.Fatal("the race did not happen: no traffic on one side of the revoke")
	}
	if passedAfter.Load() != 0 {
		t.Fatalf("%d requests sent after the revoke returned were let through", passedAfter.Load())
	}
}

// TestMalformedFlood sends thousands of generated malformed requests: never a
// pass, never a 5xx, and the heap does not grow with them.
func TestMalformedFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood skipped in -short mode")
	}
	g := startGateway(t, "header X-API-Key\n\t\tcookie sid\n\t\tjwt {\n\t\t\tsecret "+testSecret+"\n\t\t}")
	_, good := g.create(t, CreateRequest{User: "flood-target"})
	jwtGood := signJWT(t, "HS256", []byte(testSecret), validClaims("u"), nil)
	mutate := func(rng *rand.Rand, s string) string {
		b := []byte(s)
		for n := rng.IntN(4) + 1; n > 0 && len(b) > 0; n-- {
			switch rng.IntN(4) {
			case 0:
				b[rng.IntN(len(b))] = byte(rng.IntN(94) + 33)
			case 1:
				b = b[:rng.IntN(len(b))]
			case 2:
				i := rng.IntN(len(b))
				b = append(b[:i], append([]byte(strings.Repeat("A", rng.IntN(50))), b[i:]...)...)
			case 3:
				b = append(b, '.')
			}
		}
		return string(b)
	}
	send := func(client *http.Client, rng *rand.Rand, i int) int {
		req, _ := http.NewRequest(http.MethodGet, gatewayURL+"/", nil)
		v := mutate(rng, []string{good, jwtGood}[i%2])
		if v == good || v == jwtGood {
			v += "x"
		}
		switch i % 4 {
		case 0:
			req.URL.RawQuery = "token=" + url.QueryEscape(v)
		case 1:
			req.Header.Set("X-API-Key", v)
		case 2:
			req.Header.Set("Cookie", "sid="+url.QueryEscape(v))
		case 3:
			req.Header.Set("Authorization", "Bearer "+v)
		}
		res, err := client.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	run := func(n int) map[int]int {
		statuses := map[int]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				rng := rand.New(rand.NewPCG(uint64(n), uint64(w))) // one generator per worker
				for i := w; i < n; i += 4 {
					s := send(client, rng, i)
					mu.Lock()
					statuses[s]++
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		return statuses
	}
	run(1000) // warm up
	before := heap()
	statuses := run(4000)
	after := heap()
	t.Logf("statuses %v; heap %d KiB -> %d KiB", statuses, before>>10, after>>10)
	for s, n := range statuses {
		if s != 400 && s != 401 {
			t.Errorf("%d responses with status %d", n, s)
		}
	}
	if after > before+8<<20 {
		t.Errorf("heap grew by %d KiB over 4000 malformed requests", (after-before)>>10)
	}
}
