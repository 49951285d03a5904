package tokenauth

import (
	"sync"
	"time"
)

// lastUsedBatch holds last_used_at times noted on the request path until a
// store writes them in one batch. Both stores use it; its zero value is ready.
type lastUsedBatch struct {
	mu      sync.Mutex
	pending map[string]time.Time // by token ID
}

// mark notes that the token id was used at t.
func (b *lastUsedBatch) mark(id string, t time.Time) {
	b.mu.Lock()
	if b.pending == nil {
		b.pending = make(map[string]time.Time)
	}
	b.pending[id] = t
	b.mu.Unlock()
}

// overlay applies a not-yet-written time to rec, for listings.
func (b *lastUsedBatch) overlay(rec *TokenRecord) {
	b.mu.Lock()
	t, ok := b.pending[rec.ID]
	b.mu.Unlock()
	if ok && (rec.LastUsedAt == nil || t.After(*rec.LastUsedAt)) {
		rec.LastUsedAt = &t
	}
}

// take returns the pending times and starts a new batch.
func (b *lastUsedBatch) take() map[string]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	taken := b.pending
	b.pending = nil
	return taken
}

// putBack returns times whose write failed, keeping any later time noted since.
func (b *lastUsedBatch) putBack(times map[string]time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = make(map[string]time.Time, len(times))
	}
	for id, t := range times {
		if cur, ok := b.pending[id]; !ok || t.After(cur) {
			b.pending[id] = t
		}
	}
}
