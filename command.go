package tokenauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "token-auth",
		Usage: "<create|list|show|revoke|rotate|import|export> [--db <path> | --address <admin>]",
		Short: "Manages the API tokens of token_auth",
		Long: `
Creates, lists, shows, revokes, rotates, imports and exports the opaque
API tokens that the token_auth handler accepts.

By default every verb goes through the admin API of the running Caddy
(like 'caddy reload': --address, or the admin address of --config, or
` + caddy.DefaultAdminListen + `); the change is in force at once.
If the config opens more than one token database, add --db <path> to
--address to choose one.

With --db <path> and no --address, the verb works on the bbolt file
directly; Caddy must not be running with that file (the command then
fails within seconds and says to use the admin API).

A new token is printed once, alone on stdout; only its SHA-256 digest
is stored.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(
				tokenCommand(tokenCmdCreate, true, "create --user <id> [--name <n>] [--scope <s>]... [--meta k=v]... [--expires <duration>|<RFC 3339 time>|never] [--token <legacy value>] [--json]",
					"Creates a token and prints it",
					`Creates a token for a user and prints it alone on stdout (or, with
--json, the record plus "token"). It is shown this once.

New tokens expire after 90 days unless --expires says otherwise:
a duration (720h, 30d), an RFC 3339 time, or never. --token stores a
value of your own (a legacy token of 16-512 printable characters)
instead of generating one.`,
					func(f *cobra.Command) {
						f.Flags().String("user", "", "User ID the token authenticates as (required)")
						f.Flags().String("name", "", "Label for people, e.g. \"CI deploy key\"")
						f.Flags().StringArray("scope", nil, "Scope to grant (repeatable)")
						f.Flags().StringArray("meta", nil, "Metadata key=value, exposed as {http.auth.user.<key>} (repeatable)")
						f.Flags().String("expires", "", "Lifetime (720h, 30d), RFC 3339 time, or never (default 90 days)")
						f.Flags().String("token", "", "Legacy token value to store instead of a generated one")
						f.Flags().Bool("json", false, "Print the record plus \"token\" as JSON")
					}),
				tokenCommand(tokenCmdList, false, "list [--user <id>] [--json]",
					"Lists tokens (never a secret)", "Lists every token record, or only those of --user, oldest first.",
					func(f *cobra.Command) {
						f.Flags().String("user", "", "Only this user's tokens")
						f.Flags().Bool("json", false, "Print a JSON array")
					}),
				tokenCommand(tokenCmdShow, false, "show <token-id> [--json]",
					"Shows one token's record", "Shows the record of one token by its public ID (tok_...).",
					func(f *cobra.Command) {
						f.Flags().Bool("json", false, "Print the record as JSON")
					}),
				tokenCommand(tokenCmdRevoke, false, "revoke <token-id>... | --user <id>",
					"Revokes tokens", "Revokes the tokens given by ID, or every token of --user. Requests that start after the command returns are refused.",
					func(f *cobra.Command) {
						f.Flags().String("user", "", "Revoke every token of this user")
					}),
				tokenCommand(tokenCmdRotate, false, "rotate <token-id> [--grace <duration>] [--json]",
					"Replaces a token with a new one",
					`Issues a new token with the same user, name, scopes, metadata and
lifetime, and prints it like create. The old token stays valid for
--grace (default 0: revoked at once).`,
					func(f *cobra.Command) {
						f.Flags().String("grace", "", "How long the old token keeps working, e.g. 24h (default 0)")
						f.Flags().Bool("json", false, "Print the new record plus \"token\" as JSON")
					}),
				tokenCommand(tokenCmdImport, true, "import [--file <jsonl>]",
					"Imports token records from JSONL",
					`Imports one record a line, each with "token" (a legacy value, hashed on
the way in) or "digest" (a line written by export). Records whose token
or ID is already present are skipped. Reads stdin unless --file is given.`,
					func(f *cobra.Command) {
						f.Flags().String("file", "", "JSONL file to read (default stdin)")
					}),
				tokenCommand(tokenCmdExport, false, "export [--file <jsonl>]",
					"Exports every record with its digest as JSONL",
					"Writes every record with its SHA-256 digest, one a line; never a token. Writes to stdout unless --file is given.",
					func(f *cobra.Command) {
						f.Flags().String("file", "", "JSONL file to write (default stdout)")
					}),
			)
		},
	})
}

// tokenCommand builds one verb of caddy token-auth, with the flags that
// choose where the tokens are (--db, or --address/--config/--adapter).
// Only verbs that add tokens (createsFile) make a missing bbolt file.
func tokenCommand(run func(tokenBackend, caddycmd.Flags) error, createsFile bool, use, short, long string, flags func(*cobra.Command)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
	}
	cmd.Flags().String("db", "", "Work on this bbolt file directly (Caddy must not be running with it); with --address, choose this store of the running Caddy")
	cmd.Flags().String("address", "", "Address of the administration API listener (if --config is not used)")
	cmd.Flags().StringP("config", "c", "", "Configuration file to read the admin address from (if --address is not used)")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	flags(cmd)
	cmd.RunE = caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
		backend, err := openTokenBackend(fl, createsFile)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		err = run(backend, fl)
		if cerr := backend.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		return caddy.ExitCodeSuccess, nil
	})
	return cmd
}

// tokenBackend is where a CLI verb does its work: a bbolt file opened
// directly, or the admin API of a running Caddy.
type tokenBackend interface {
	Create(req CreateRequest) (*issuedToken, error)
	List(user string) ([]*TokenRecord, error)
	Show(id string) (*TokenRecord, error)
	Revoke(id string) error
	RevokeUser(user string) (int, error)
	Rotate(id string, grace string) (*issuedToken, error)
	Import(r io.Reader) (ImportResult, error)
	Export(w io.Writer) error
	Close() error
}

// openTokenBackend chooses the backend from the flags: --db alone is the
// file; otherwise the admin API (with --db naming the store, if given).
func openTokenBackend(fl caddycmd.Flags, createsFile bool) (tokenBackend, error) {
	db := fl.String("db")
	addr, cfg := fl.String("address"), fl.String("config")
	if db != "" && addr == "" && cfg == "" {
		return openFileBackend(db, createsFile)
	}
	adminAddr, err := caddycmd.DetermineAdminAPIAddress(addr, nil, cfg, fl.String("adapter"))
	if err != nil {
		return nil, fmt.Errorf("couldn't determine admin API address: %v", err)
	}
	b := &adminBackend{addr: adminAddr}
	if db != "" {
		if b.db, err = filepath.Abs(db); err != nil {
			return nil, fmt.Errorf("--db %q: %v", db, err)
		}
	}
	return b, nil
}

// openFileBackend opens the bbolt file at path. Only verbs that add
// tokens (createsFile) make a missing file; the others say it is missing.
func openFileBackend(path string, createsFile bool) (tokenBackend, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !createsFile {
		return nil, fmt.Errorf("no token database at %s", path)
	}
	store, err := openBoltStore(path)
	if err != nil {
		return nil, err
	}
	return &fileBackend{store: store}, nil
}

// ---- the verbs ----

func tokenCmdCreate(b tokenBackend, fl caddycmd.Flags) error {
	if err := noArgs(fl); err != nil {
		return err
	}
	scopes, _ := fl.GetStringArray("scope")
	metaArgs, _ := fl.GetStringArray("meta")
	var meta map[string]string
	for _, kv := range metaArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--meta %q: want key=value", kv)
		}
		if meta == nil {
			meta = make(map[string]string)
		}
		meta[k] = v
	}
	req := CreateRequest{
		User:      fl.String("user"),
		Name:      fl.String("name"),
		Scopes:    scopes,
		Meta:      meta,
		ExpiresIn: fl.String("expires"),
		Token:     fl.String("token"),
	}
	if req.User == "" {
		return errors.New("--user is required")
	}
	issued, err := b.Create(req)
	if err != nil {
		return err
	}
	return printIssued(issued, fl.Bool("json"))
}

func tokenCmdList(b tokenBackend, fl caddycmd.Flags) error {
	if err := noArgs(fl); err != nil {
		return err
	}
	recs, err := b.List(fl.String("user"))
	if err != nil {
		return err
	}
	if fl.Bool("json") {
		if recs == nil {
			recs = []*TokenRecord{}
		}
		return printJSON(recs)
	}
	return printTable(os.Stdout, recs, time.Now())
}

func tokenCmdShow(b tokenBackend, fl caddycmd.Flags) error {
	if fl.NArg() != 1 {
		return errors.New("show takes exactly one token ID")
	}
	rec, err := b.Show(fl.Arg(0))
	if err != nil {
		return err
	}
	if fl.Bool("json") {
		return printJSON(rec)
	}
	return printTable(os.Stdout, []*TokenRecord{rec}, time.Now())
}

func tokenCmdRevoke(b tokenBackend, fl caddycmd.Flags) error {
	user := fl.String("user")
	switch {
	case user != "" && fl.NArg() > 0:
		return errors.New("give token IDs or --user, not both")
	case user != "":
		n, err := b.RevokeUser(user)
		if err != nil {
			return err
		}
		fmt.Printf("revoked %d token(s) of user %s\n", n, user)
		return nil
	case fl.NArg() == 0:
		return errors.New("give the IDs of the tokens to revoke, or --user <id>")
	}
	var failed []string
	for _, id := range fl.Args() {
		if err := b.Revoke(id); err != nil {
			failed = append(failed, err.Error())
			continue
		}
		fmt.Printf("revoked %s\n", id)
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func tokenCmdRotate(b tokenBackend, fl caddycmd.Flags) error {
	if fl.NArg() != 1 {
		return errors.New("rotate takes exactly one token ID")
	}
	grace := fl.String("grace")
	if _, err := parseGrace(grace); err != nil {
		return err
	}
	issued, err := b.Rotate(fl.Arg(0), grace)
	if err != nil {
		return err
	}
	return printIssued(issued, fl.Bool("json"))
}

func tokenCmdImport(b tokenBackend, fl caddycmd.Flags) error {
	if err := noArgs(fl); err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if name := fl.String("file"); name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	res, err := b.Import(in)
	if err != nil {
		return err
	}
	fmt.Printf("imported %d, skipped %d (already present)\n", res.Imported, res.Skipped)
	return nil
}

func tokenCmdExport(b tokenBackend, fl caddycmd.Flags) error {
	if err := noArgs(fl); err != nil {
		return err
	}
	name := fl.String("file")
	if name == "" || name == "-" {
		return b.Export(os.Stdout)
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := b.Export(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func noArgs(fl caddycmd.Flags) error {
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	return nil
}

// ---- output ----

func printIssued(t *issuedToken, asJSON bool) error {
	if asJSON {
		return printJSON(t)
	}
	_, err := fmt.Println(t.Token)
	return err
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes records as an aligned table for people.
func printTable(w io.Writer, recs []*TokenRecord, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tNAME\tSCOPES\tEXPIRES\tLAST USED\tSTATUS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.ID, r.User, orDash(r.Name), orDash(strings.Join(r.Scopes, ",")),
			timeOr(r.ExpiresAt, "never"), timeOr(r.LastUsedAt, "never"), tokenStatus(r, now))
	}
	return tw.Flush()
}

// tokenStatus is a record's state for people: active, expired, revoked,
// or active until the end of a rotation's grace period.
func tokenStatus(r *TokenRecord, now time.Time) string {
	switch reason := r.refusal(now); {
	case reason == "token revoked":
		return "revoked"
	case reason == "token expired":
		return "expired"
	case r.RevokedAt != nil:
		return "revoked from " + r.RevokedAt.UTC().Format(time.RFC3339)
	}
	return "active"
}

func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ---- the file backend ----

// fileBackend works on a bbolt file directly, with the same lifecycle
// functions as the admin API. Close flushes and releases the file.
type fileBackend struct {
	store *boltStore
}

func (b *fileBackend) Create(req CreateRequest) (*issuedToken, error) {
	rec, token, err := createToken(context.Background(), b.store, req, time.Now())
	if err != nil {
		return nil, err
	}
	return &issuedToken{TokenRecord: *rec, Token: token}, nil
}

func (b *fileBackend) List(user string) ([]*TokenRecord, error) {
	return b.store.List(context.Background(), user)
}

func (b *fileBackend) Show(id string) (*TokenRecord, error) {
	rec, err := b.store.Get(context.Background(), id)
	return rec, tokenError(err, id)
}

func (b *fileBackend) Revoke(id string) error {
	_, err := b.store.Revoke(context.Background(), id, revocationTime())
	return tokenError(err, id)
}

func (b *fileBackend) RevokeUser(user string) (int, error) {
	return b.store.RevokeUser(context.Background(), user, revocationTime())
}

func (b *fileBackend) Rotate(id string, grace string) (*issuedToken, error) {
	d, err := parseGrace(grace)
	if err != nil {
		return nil, err
	}
	rec, token, err := rotateToken(context.Background(), b.store, id, d, time.Now())
	if err != nil {
		return nil, tokenError(err, id)
	}
	return &issuedToken{TokenRecord: *rec, Token: token}, nil
}

func (b *fileBackend) Import(r io.Reader) (ImportResult, error) {
	res, err := importRecords(context.Background(), b.store, r, time.Now())
	if err != nil {
		return res, fmt.Errorf("import stopped after %d imported and %d skipped: %w", res.Imported, res.Skipped, err)
	}
	return res, nil
}

func (b *fileBackend) Export(w io.Writer) error {
	return exportRecords(context.Background(), b.store, w)
}

func (b *fileBackend) Close() error { return b.store.Close() }

// ---- the admin API backend ----

// adminBackend sends each verb to the admin API of a running Caddy.
type adminBackend struct {
	addr string // admin listen address
	db   string // absolute path of the store to use, or "" for the only one
}

// uri builds an admin URI below /token_auth/ with the query q (plus db).
func (b *adminBackend) uri(path string, q url.Values) string {
	if b.db != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("db", b.db)
	}
	u := adminEndpointBase + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do makes one admin API request and decodes a JSON answer into out (if not nil).
func (b *adminBackend) do(method, uri string, body io.Reader, headers http.Header, out any) error {
	if headers == nil {
		headers = make(http.Header)
	}
	resp, err := caddycmd.AdminAPIRequest(b.addr, method, uri, headers, body)
	if err != nil {
		return adminRequestError(b.addr, err)
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding admin API response: %v", err)
	}
	return nil
}

var adminHTTPErr = regexp.MustCompile(`(?s)^caddy responded with error: (HTTP \d+): (.*)$`)

// adminRequestError turns AdminAPIRequest's error into one line: the
// admin API's own message, or a hint when Caddy cannot be reached.
func adminRequestError(addr string, err error) error {
	msg := err.Error()
	if m := adminHTTPErr.FindStringSubmatch(msg); m != nil {
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(m[2]), &body) == nil && body.Error != "" {
			return fmt.Errorf("%s: %s", m[1], body.Error)
		}
		return fmt.Errorf("%s: %s", m[1], strings.Join(strings.Fields(m[2]), " "))
	}
	if strings.HasPrefix(msg, "performing request") {
		return fmt.Errorf("cannot reach Caddy's admin API at %s (is Caddy running? to work on a file directly, use --db <path>): %v", addr, err)
	}
	return err
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

func (b *adminBackend) Create(req CreateRequest) (*issuedToken, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	out := new(issuedToken)
	return out, b.do(http.MethodPost, b.uri("tokens", nil), body, nil, out)
}

func (b *adminBackend) List(user string) ([]*TokenRecord, error) {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	var out []*TokenRecord
	return out, b.do(http.MethodGet, b.uri("tokens", q), nil, nil, &out)
}

func (b *adminBackend) Show(id string) (*TokenRecord, error) {
	out := new(TokenRecord)
	return out, b.do(http.MethodGet, b.uri("tokens/"+url.PathEscape(id), nil), nil, nil, out)
}

func (b *adminBackend) Revoke(id string) error {
	return b.do(http.MethodDelete, b.uri("tokens/"+url.PathEscape(id), nil), nil, nil, nil)
}

func (b *adminBackend) RevokeUser(user string) (int, error) {
	var out revokeUserResult
	err := b.do(http.MethodDelete, b.uri("tokens", url.Values{"user": {user}}), nil, nil, &out)
	return out.Revoked, err
}

func (b *adminBackend) Rotate(id string, grace string) (*issuedToken, error) {
	body, err := jsonBody(rotateRequest{Grace: grace})
	if err != nil {
		return nil, err
	}
	out := new(issuedToken)
	return out, b.do(http.MethodPost, b.uri("tokens/"+url.PathEscape(id)+"/rotate", nil), body, nil, out)
}

func (b *adminBackend) Import(r io.Reader) (ImportResult, error) {
	var out ImportResult
	h := http.Header{"Content-Type": {"application/x-ndjson"}}
	return out, b.do(http.MethodPost, b.uri("import", nil), r, h, &out)
}

func (b *adminBackend) Export(w io.Writer) error {
	return b.do(http.MethodGet, b.uri("export", nil), nil, nil, w)
}

func (b *adminBackend) Close() error { return nil }
