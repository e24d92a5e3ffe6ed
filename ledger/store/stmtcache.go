package store

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds the statement cache; queries with IN lists have a few
// shapes each, so the real number stays far below it.
const maxCachedStmts = 256

// stmtCache holds statements prepared on a writer pool of a single connection
// (SQLite's), so Tx.StmtContext finds each statement already prepared on the
// transaction's connection and the engine never parses it again. Keys are the
// queries as written; what is prepared is their rebound form.
type stmtCache struct {
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stmts[q]
}

// prepare prepares queries that missed the cache. It runs after the transaction
// that missed them has ended: preparing on the writer inside it would wait for the
// one connection that transaction holds.
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, rebind func(string) string, queries []string) {
	for _, q := range queries {
		if ctx.Err() != nil {
			return
		}
		c.mu.RLock()
		_, have := c.stmts[q]
		full := len(c.stmts) >= maxCachedStmts
		c.mu.RUnlock()
		if have || full {
			continue
		}
		st, err := db.PrepareContext(ctx, rebind(q))
		if err != nil {
			continue // the query still runs unprepared
		}
		c.mu.Lock()
		if _, have := c.stmts[q]; have {
			_ = st.Close()
		} else {
			c.stmts[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		_ = st.Close()
		delete(c.stmts, q)
	}
}

// readStmts holds statements prepared on the read pool. database/sql prepares
// a pooled statement on each connection the first time it runs there, so a
// hot read (an Operation by id, the freezes, an approval by operation) is
// parsed once per connection, not once per call.
type readStmts struct {
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
	full  bool
}

// peek returns q if it is prepared already.
func (c *readStmts) peek(q string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stmts[q]
}

// get returns q prepared on db, preparing it on first use; nil (run it
// unprepared) when the cache is full or preparing failed. No lock is held
// while preparing: that waits for a free connection of the pool.
func (c *readStmts) get(ctx context.Context, db *sql.DB, q string) *sql.Stmt {
	c.mu.RLock()
	st, full := c.stmts[q], c.full
	c.mu.RUnlock()
	if st != nil || full {
		return st
	}
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have := c.stmts[q]; have != nil {
		_ = st.Close()
		return have
	}
	if len(c.stmts) >= maxCachedStmts {
		c.full = true
		_ = st.Close()
		return nil
	}
	c.stmts[q] = st
	return st
}

func (c *readStmts) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		_ = st.Close()
		delete(c.stmts, q)
	}
}
