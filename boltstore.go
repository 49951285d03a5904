package tokenauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Layout of the bbolt file:
//
//	meta:   "schema_version" -> "1"
//	tokens: digest (32 bytes) -> JSON TokenRecord
//	ids:    public ID -> digest
const boltSchemaVersion = 1

var (
	bucketMeta   = []byte("meta")
	bucketTokens = []byte("tokens")
	bucketIDs    = []byte("ids")
	keySchema    = []byte("schema_version")
)

const (
	// boltLockTimeout bounds how long opening a file that another process holds may wait.
	boltLockTimeout = 2 * time.Second
	// lastUsedFlushInterval is how often pending last_used_at times are written.
	lastUsedFlushInterval = 5 * time.Second
	// boltCacheMax bounds the decoded-record cache; it is emptied when full.
	boltCacheMax = 100_000
)

// boltStore is the embedded TokenStore: one bbolt file, one handle per process
// (shared across config reloads through storePool), a cache of decoded records
// for the request path, and a batcher for last_used_at.
type boltStore struct {
	path string
	db   *bbolt.DB

	cacheMu  sync.RWMutex
	cache    map[Digest]*TokenRecord
	cacheGen uint64 // bumped by forget, so a Lookup that read before a change does not cache what it read

	used    lastUsedBatch
	stop    chan struct{}
	stopped chan struct{}
}

// errLocked is returned when another process holds the bbolt file.
var errLocked = errors.New("token database is locked by another process (is Caddy running with it? then manage tokens through the admin API: leave out --db)")

// openBoltStore opens (creating if needed) the bbolt file at path.
func openBoltStore(path string) (*boltStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("making folder for token database: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: boltLockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", path, errLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("opening token database %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n > boltSchemaVersion {
				return fmt.Errorf("schema version %q is newer than this build understands (%d)", v, boltSchemaVersion)
			}
		} else if err := meta.Put(keySchema, []byte(strconv.Itoa(boltSchemaVersion))); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketTokens); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketIDs)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising token database %s: %w", path, err)
	}
	s := &boltStore{
		path:    path,
		db:      db,
		cache:   make(map[Digest]*TokenRecord),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go s.flushLoop()
	return s, nil
}

// Lookup implements TokenStore. Hits come from memory; a miss reads the file once.
func (s *boltStore) Lookup(_ context.Context, digest Digest) (*TokenRecord, error) {
	s.cacheMu.RLock()
	rec, gen := s.cache[digest], s.cacheGen
	s.cacheMu.RUnlock()
	if rec != nil {
		return rec, nil
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get(digest[:])
		if v == nil {
			return ErrTokenNotFound
		}
		rec = new(TokenRecord)
		return json.Unmarshal(v, rec) // decodes (copies) inside the transaction
	})
	if err != nil {
		return nil, err
	}
	rec.prepare()
	s.cacheMu.Lock()
	if s.cacheGen == gen { // else a change committed meanwhile: what we read may be stale
		if len(s.cache) >= boltCacheMax {
			clear(s.cache)
		}
		s.cache[digest] = rec
	}
	s.cacheMu.Unlock()
	return rec, nil
}

// MarkUsed implements TokenStore.
func (s *boltStore) MarkUsed(id string, t time.Time) {
	s.used.mark(id, t)
}

// Insert implements TokenStore.
func (s *boltStore) Insert(_ context.Context, rec *TokenRecord, digest Digest) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		return insertTx(tx, rec, digest)
	})
}

func insertTx(tx *bbolt.Tx, rec *TokenRecord, digest Digest) error {
	tokens, ids := tx.Bucket(bucketTokens), tx.Bucket(bucketIDs)
	if tokens.Get(digest[:]) != nil || ids.Get([]byte(rec.ID)) != nil {
		return ErrTokenExists
	}
	return putTx(tx, rec, digest)
}

func putTx(tx *bbolt.Tx, rec *TokenRecord, digest Digest) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketTokens).Put(digest[:], v); err != nil {
		return err
	}
	return tx.Bucket(bucketIDs).Put([]byte(rec.ID), digest[:])
}

// getTx reads the record with the given ID and its digest.
func getTx(tx *bbolt.Tx, id string) (*TokenRecord, Digest, error) {
	var digest Digest
	d := tx.Bucket(bucketIDs).Get([]byte(id))
	if d == nil {
		return nil, digest, ErrTokenNotFound
	}
	copy(digest[:], d)
	v := tx.Bucket(bucketTokens).Get(d)
	if v == nil {
		return nil, digest, ErrTokenNotFound
	}
	rec := new(TokenRecord)
	if err := json.Unmarshal(v, rec); err != nil {
		return nil, digest, fmt.Errorf("decoding record %s: %w", id, err)
	}
	return rec, digest, nil
}

// Get implements TokenStore.
func (s *boltStore) Get(_ context.Context, id string) (*TokenRecord, error) {
	var rec *TokenRecord
	err := s.db.View(func(tx *bbolt.Tx) (err error) {
		rec, _, err = getTx(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.used.overlay(rec)
	return rec, nil
}

// List implements TokenStore.
func (s *boltStore) List(ctx context.Context, user string) ([]*TokenRecord, error) {
	var out []*TokenRecord
	err := s.Export(ctx, func(e ExportedRecord) error {
		if user == "" || e.User == user {
			rec := e.TokenRecord
			s.used.overlay(&rec)
			out = append(out, &rec)
		}
		return nil
	})
	return out, err
}

// Revoke implements TokenStore.
func (s *boltStore) Revoke(_ context.Context, id string, at time.Time) (*TokenRecord, error) {
	var rec *TokenRecord
	var changed []Digest
	err := s.db.Update(func(tx *bbolt.Tx) error {
		r, digest, err := getTx(tx, id)
		if err != nil {
			return err
		}
		rec = r
		if r.RevokedAt != nil && !r.RevokedAt.After(at) {
			return nil
		}
		r.RevokedAt = &at
		changed = append(changed[:0], digest)
		return putTx(tx, r, digest)
	})
	s.forget(changed...) // after the commit: a Lookup racing the change must not cache the old record
	return rec, err
}

// RevokeUser implements TokenStore.
func (s *boltStore) RevokeUser(_ context.Context, user string, at time.Time) (int, error) {
	n := 0
	var changed []Digest
	err := s.db.Update(func(tx *bbolt.Tx) error {
		n = 0
		changed = changed[:0]
		type change struct {
			rec    *TokenRecord
			digest Digest
		}
		var changes []change
		err := tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			rec := new(TokenRecord)
			if err := json.Unmarshal(v, rec); err != nil {
				return err
			}
			if rec.User != user || (rec.RevokedAt != nil && !rec.RevokedAt.After(at)) {
				return nil
			}
			rec.RevokedAt = &at
			changes = append(changes, change{rec, Digest(k)})
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range changes { // bbolt forbids writes while iterating
			if err := putTx(tx, c.rec, c.digest); err != nil {
				return err
			}
			changed = append(changed, c.digest)
		}
		n = len(changes)
		return nil
	})
	s.forget(changed...)
	return n, err
}

// Rotate implements TokenStore.
func (s *boltStore) Rotate(_ context.Context, oldID string, oldRevokeAt time.Time, next *TokenRecord, nextDigest Digest) error {
	var changed []Digest
	err := s.db.Update(func(tx *bbolt.Tx) error {
		changed = changed[:0]
		old, digest, err := getTx(tx, oldID)
		if err != nil {
			return err
		}
		if err := insertTx(tx, next, nextDigest); err != nil {
			return err
		}
		if old.RevokedAt == nil || old.RevokedAt.After(oldRevokeAt) {
			old.RevokedAt = &oldRevokeAt
			changed = append(changed, digest)
			return putTx(tx, old, digest)
		}
		return nil
	})
	s.forget(changed...)
	return err
}

// Import implements TokenStore.
func (s *boltStore) Import(_ context.Context, batch []ExportedRecord) (ImportResult, error) {
	var res ImportResult
	err := s.db.Update(func(tx *bbolt.Tx) error {
		res = ImportResult{}
		for i := range batch {
			digest, err := parseDigest(batch[i].Digest)
			if err != nil {
				return fmt.Errorf("record %s: %w", batch[i].ID, err)
			}
			switch err := insertTx(tx, &batch[i].TokenRecord, digest); {
			case errors.Is(err, ErrTokenExists):
				res.Skipped++
			case err != nil:
				return err
			default:
				res.Imported++
			}
		}
		return nil
	})
	return res, err
}

// Export implements TokenStore.
func (s *boltStore) Export(_ context.Context, fn func(ExportedRecord) error) error {
	var all []ExportedRecord
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var e ExportedRecord
			if err := json.Unmarshal(v, &e.TokenRecord); err != nil {
				return err
			}
			e.Digest = Digest(k).String()
			all = append(all, e)
			return nil
		})
	})
	if err != nil {
		return err
	}
	slices.SortStableFunc(all, func(a, b ExportedRecord) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return bytes.Compare([]byte(a.ID), []byte(b.ID))
	})
	for _, e := range all {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// forget drops records from the request-path cache after a change to them
// committed, and stops Lookups that read before the commit from caching
// what they read.
func (s *boltStore) forget(digests ...Digest) {
	if len(digests) == 0 {
		return
	}
	s.cacheMu.Lock()
	for _, d := range digests {
		delete(s.cache, d)
	}
	s.cacheGen++
	s.cacheMu.Unlock()
}

// flushLoop writes pending last_used_at times every lastUsedFlushInterval until Close.
func (s *boltStore) flushLoop() {
	defer close(s.stopped)
	ticker := time.NewTicker(lastUsedFlushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			_ = s.flushLastUsed()
		case <-s.stop:
			return
		}
	}
}

// flushLastUsed writes every pending last_used_at in one transaction.
func (s *boltStore) flushLastUsed() error {
	pending := s.used.take()
	if len(pending) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for id, t := range pending {
			rec, digest, err := getTx(tx, id)
			if errors.Is(err, ErrTokenNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if rec.LastUsedAt != nil && !t.After(*rec.LastUsedAt) {
				continue
			}
			t := t.UTC().Truncate(time.Second)
			rec.LastUsedAt = &t
			if err := putTx(tx, rec, digest); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.used.putBack(pending) // try again at the next flush
	}
	return err
}

// Close flushes pending last_used_at times and closes the file.
func (s *boltStore) Close() error {
	close(s.stop)
	<-s.stopped
	flushErr := s.flushLastUsed()
	return errors.Join(flushErr, s.db.Close())
}

// Destruct implements caddy.Destructor, so the pool closes the file when its
// last user (config) is cleaned up.
func (s *boltStore) Destruct() error { return s.Close() }

// Interface guards
var _ TokenStore = (*boltStore)(nil)
