package tokenauth

import (
	"fmt"
	"path/filepath"
	"sort"

	"github.com/caddyserver/caddy/v2"
)

// storePool holds one open store per bbolt file (keyed by absolute path) for
// the whole process, shared by every config that names the file: caddy reload
// provisions the new config before it cleans up the old one, and a second
// bbolt.Open of the same file in one process would wait on its own lock.
var storePool = caddy.NewUsagePool()

// defaultDBPath is where the bbolt file lives when no db is configured.
func defaultDBPath() string {
	return filepath.Join(caddy.AppDataDir(), "token_auth", "tokens.db")
}

// acquireBoltStore returns the shared store for path, opening it on first use.
// Each call must be paired with releaseStore(key) with the returned key.
func acquireBoltStore(path string) (store TokenStore, key string, err error) {
	key, err = filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("token database path %q: %w", path, err)
	}
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openBoltStore(key)
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*boltStore), key, nil
}

// releaseStore gives back one use of a pooled store; the last release closes it.
func releaseStore(key string) error {
	_, err := storePool.Delete(key)
	return err
}

// openStores lists the stores that running configs hold, by key (the bbolt
// file's absolute path), for the admin API.
func openStores() map[string]TokenStore {
	out := make(map[string]TokenStore)
	storePool.Range(func(k, v any) bool {
		if s, ok := v.(TokenStore); ok {
			out[k.(string)] = s
		}
		return true
	})
	return out
}

// openStoreKeys returns the keys of openStores, sorted.
func openStoreKeys() []string {
	keys := make([]string, 0)
	for k := range openStores() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
