package tokenauth

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
)

// remoteKeySources starts the remote key sets of the config (jwks_url, or
// OIDC discovery from the issuer when no key is configured). Their background
// work must stop when ctx is cancelled (config unload).
func (c *JWTConfig) remoteKeySources(ctx caddy.Context, static staticKeys) ([]keySource, error) {
	if len(c.JWKSURL) > 0 {
		return nil, errors.New("jwt: jwks_url is not supported yet")
	}
	return nil, nil
}
