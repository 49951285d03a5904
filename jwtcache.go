package tokenauth

import (
	"sync"
	"time"
)

const (
	// verifiedCacheMax bounds the number of verified JWTs remembered.
	verifiedCacheMax = 10_000
	// verifiedCacheMaxAge bounds how long a verified JWT is trusted without
	// re-verification, so a key withdrawn from a key set stops working soon.
	verifiedCacheMaxAge = 5 * time.Minute
)

// verifiedCache remembers JWTs that passed every check, keyed by the digest of
// the whole token, so a client that repeats its token is not re-verified on
// each request. An entry never outlives the token's exp (plus leeway), and
// only valid tokens are put in. When full, an arbitrary entry is evicted.
type verifiedCache struct {
	mu      sync.RWMutex
	max     int
	entries map[Digest]verifiedEntry
}

type verifiedEntry struct {
	id      *jwtIdentity
	expires time.Time // min(validUntil, added + verifiedCacheMaxAge)
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, entries: make(map[Digest]verifiedEntry)}
}

// get returns the identity of a verified token that is still valid at now.
func (c *verifiedCache) get(d Digest, now time.Time) *jwtIdentity {
	c.mu.RLock()
	e, ok := c.entries[d]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return nil
	}
	return e.id
}

// put remembers a verified token until its expiry or verifiedCacheMaxAge.
func (c *verifiedCache) put(d Digest, id *jwtIdentity, now time.Time) {
	expires := now.Add(verifiedCacheMaxAge)
	if id.validUntil.Before(expires) {
		expires = id.validUntil
	}
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries { // random order: drop the expired, else one arbitrary entry
			if !now.Before(e.expires) || len(c.entries) >= c.max {
				delete(c.entries, k)
			}
			if len(c.entries) < c.max {
				break
			}
		}
	}
	c.entries[d] = verifiedEntry{id: id, expires: expires}
	c.mu.Unlock()
}

// len reports the number of entries, for tests and metrics.
func (c *verifiedCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
