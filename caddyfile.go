package tokenauth

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	token_auth [<matcher>] {
//		db               <path>
//		store            bolt <path> | postgres <dsn> [{ cache_ttl <duration> }]
//		query            <param>|off
//		header           <field>
//		cookie           <name>
//		optional
//		keep_credentials
//		require_scope    <scope>...
//		realm            <realm>
//		jwt {
//			secret       <secret>
//			public_key   <pem-file>
//			jwks_url     <url>
//			issuer       <iss>...
//			audience     <aud>...
//			algorithms   <alg>...
//			user_claim   <claim>
//			scope_claim  <claim>
//			leeway       <duration>
//		}
//	}
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	ta := new(TokenAuth)
	err := ta.UnmarshalCaddyfile(h.Dispenser)
	return ta, err
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (ta *TokenAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "db":
			if err := oneArg(d, &ta.DB); err != nil {
				return err
			}
		case "store":
			if err := ta.unmarshalStore(d); err != nil {
				return err
			}
		case "query":
			if err := oneArg(d, &ta.Query); err != nil {
				return err
			}
		case "header":
			if err := oneArg(d, &ta.Header); err != nil {
				return err
			}
		case "cookie":
			if err := oneArg(d, &ta.Cookie); err != nil {
				return err
			}
		case "realm":
			if err := oneArg(d, &ta.Realm); err != nil {
				return err
			}
			if err := validateRealm(ta.Realm); err != nil {
				return d.Err(err.Error())
			}
		case "optional":
			if d.NextArg() {
				return d.ArgErr()
			}
			ta.Optional = true
		case "keep_credentials":
			if d.NextArg() {
				return d.ArgErr()
			}
			ta.KeepCredentials = true
		case "require_scope":
			if err := someArgs(d, &ta.RequireScope); err != nil {
				return err
			}
		case "jwt":
			if ta.JWT != nil {
				return d.Err("jwt block given twice")
			}
			ta.JWT = new(JWTConfig)
			line := d.Line()
			if err := ta.JWT.unmarshalCaddyfile(d); err != nil {
				return err
			}
			if err := ta.JWT.checkStatic(); err != nil {
				return fmt.Errorf("%w, at %s:%d", err, d.File(), line)
			}
		default:
			return d.Errf("unrecognized subdirective '%s'", d.Val())
		}
	}
	return nil
}

// unmarshalStore reads "store <backend> <args...>" into StoreRaw.
func (ta *TokenAuth) unmarshalStore(d *caddyfile.Dispenser) error {
	if ta.StoreRaw != nil {
		return d.Err("store given twice")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	backend := d.Val()
	var mod any
	switch backend {
	case "bolt":
		m := new(BoltStoreModule)
		if err := oneArg(d, &m.Path); err != nil {
			return err
		}
		mod = m
	case "postgres": // store postgres <dsn> [{ cache_ttl <duration> }]
		m := new(PostgresStoreModule)
		if err := oneArg(d, &m.DSN); err != nil {
			return err
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			if d.Val() != "cache_ttl" {
				return d.Errf("unrecognized postgres store option '%s'", d.Val())
			}
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			ttl, err := caddy.ParseDuration(s)
			if err != nil || ttl <= 0 || ttl > pgMaxCacheTTL {
				return d.Errf("cache_ttl '%s': want a duration up to %s", s, pgMaxCacheTTL)
			}
			m.CacheTTL = caddy.Duration(ttl)
		}
		mod = m
	default:
		return d.Errf("unknown store backend '%s' (want bolt or postgres)", backend)
	}
	ta.StoreRaw = caddyconfig.JSONModuleObject(mod, "backend", backend, nil)
	return nil
}

// unmarshalCaddyfile reads the jwt { } block.
func (c *JWTConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret":
			if err := oneArg(d, &c.Secret); err != nil {
				return err
			}
		case "public_key":
			var file string
			if err := oneArg(d, &file); err != nil {
				return err
			}
			c.PublicKey = append(c.PublicKey, file)
		case "jwks_url":
			var u string
			if err := oneArg(d, &u); err != nil {
				return err
			}
			c.JWKSURL = append(c.JWKSURL, u)
		case "issuer":
			if err := someArgs(d, &c.Issuer); err != nil {
				return err
			}
		case "audience":
			if err := someArgs(d, &c.Audience); err != nil {
				return err
			}
		case "algorithms":
			if err := someArgs(d, &c.Algorithms); err != nil {
				return err
			}
			for _, alg := range c.Algorithms {
				if _, ok := algorithmFamily[alg]; !ok {
					return d.Errf("unknown jwt algorithm '%s'", alg)
				}
			}
		case "user_claim":
			if err := oneArg(d, &c.UserClaim); err != nil {
				return err
			}
		case "scope_claim":
			if err := oneArg(d, &c.ScopeClaim); err != nil {
				return err
			}
		case "leeway":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur < 0 {
				return d.Errf("leeway '%s': want a duration such as 30s", s)
			}
			c.Leeway = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized jwt subdirective '%s'", d.Val())
		}
	}
	return nil
}

// checkStatic loads the keys and checks the algorithms at parse time, so a
// mistake is reported with its Caddyfile line. Values with placeholders are
// left to Provision, where they are resolved.
func (c *JWTConfig) checkStatic() error {
	if strings.Contains(c.Secret, "{") {
		return nil
	}
	for _, f := range c.PublicKey {
		if strings.Contains(f, "{") {
			return nil
		}
	}
	keys, err := c.loadStaticKeys(caddy.NewReplacer())
	if err != nil {
		return err
	}
	_, err = c.resolveAlgorithms(keys, c.usesRemoteKeys(keys))
	return err
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// someArgs appends one or more arguments to dst.
func someArgs(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = append(*dst, args...)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*TokenAuth)(nil)
