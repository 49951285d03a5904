// Package tokenauth is a Caddy HTTP handler that authenticates requests by API token or JWT.
package tokenauth
