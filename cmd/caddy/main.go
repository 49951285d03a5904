// Command caddy is Caddy with its standard modules plus the token_auth plugin.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/tokenauth/caddy-token-auth"
)

func main() {
	caddycmd.Main()
}
