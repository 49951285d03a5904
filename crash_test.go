package tokenauth

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSigkillDuringCreateStream kills Caddy with SIGKILL while clients are
// creating tokens through the admin API: after a restart, the file opens
// clean and every token whose create was acknowledged (201) authenticates.
func TestSigkillDuringCreateStream(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the caddy binary; skipped in -short mode")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "tokens.db")
	c := startCaddy(t, dir, tokenAuthBlock(db))

	type issued struct{ user, token string }
	var mu sync.Mutex
	var acked []issued
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("w%d-%d", w, i)
				res, err := client.Post("http://"+c.admin+"/token_auth/tokens", "application/json",
					strings.NewReader(`{"user":"`+user+`"}`))
				if err != nil {
					return // the server is gone
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					continue
				}
				var it struct{ Token string }
				if json.Unmarshal(body, &it) == nil && it.Token != "" {
					mu.Lock()
					acked = append(acked, issued{user, it.Token})
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	_ = c.wait(10 * time.Second)
	if len(acked) < 20 {
		t.Fatalf("only %d creates acknowledged before the kill: the stream did not run", len(acked))
	}

	// the file opens clean: bbolt's own consistency check, offline
	out, err := exec.Command(caddyBinary(t), "token-auth", "list", "--db", db, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("list --db after SIGKILL: %v\n%s", err, out)
	}
	store, err := openBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.db.View(func(tx *boltTx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check after SIGKILL: %v", err)
	}
	_ = store.Close()

	c2 := runCaddy(t, dir, c.config)
	for i, it := range acked {
		code, body := c2.get(it.token)
		if code != http.StatusOK || body != "user="+it.user {
			t.Fatalf("acknowledged token %d of %d after SIGKILL and restart: %d %q", i+1, len(acked), code, body)
		}
	}
	t.Logf("%d acknowledged creates, all still valid after SIGKILL", len(acked))
}
