package tokenauth

import (
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(BoltStoreModule{})
}

// StoreBackend is a module in the http.handlers.token_auth.stores namespace:
// it names a token store and acquires the process-wide shared handle to it.
type StoreBackend interface {
	// AcquireStore returns the shared store and the storePool key that
	// releaseStore must be given when the config is cleaned up.
	AcquireStore(ctx caddy.Context) (TokenStore, string, error)
}

// BoltStoreModule is the embedded bbolt store (the default). The handler's
// db option is its shorthand.
type BoltStoreModule struct {
	// Path is the bbolt file. Default: <caddy data dir>/token_auth/tokens.db.
	// Placeholders such as {env.X} are resolved at load.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (BoltStoreModule) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.token_auth.stores.bolt",
		New: func() caddy.Module { return new(BoltStoreModule) },
	}
}

// AcquireStore implements StoreBackend.
func (m *BoltStoreModule) AcquireStore(caddy.Context) (TokenStore, string, error) {
	path := m.Path
	if path == "" {
		path = defaultDBPath()
	}
	return acquireBoltStore(caddy.NewReplacer().ReplaceKnown(path, ""))
}

// Interface guard
var _ StoreBackend = (*BoltStoreModule)(nil)
