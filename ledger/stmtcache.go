package ledger

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds the statement cache; queries with IN lists have a few
// shapes each, so the real number stays far below it.
const maxCachedStmts = 256

// stmtCache holds statements prepared on the writer. The writer has a single
// connection, so Tx.StmtContext finds each statement already prepared on the
// transaction's connection and SQLite never parses it again.
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
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, queries []string) {
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
		st, err := db.PrepareContext(ctx, q)
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

// txc is a transaction that runs statements through the cache when it has one
// (write transactions on the writer) and records the queries that missed.
type txc struct {
	*sql.Tx
	cache  *stmtCache
	misses *[]string
}

func (t txc) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.cache == nil {
		return nil
	}
	if st := t.cache.get(q); st != nil {
		return t.Tx.StmtContext(ctx, st)
	}
	*t.misses = append(*t.misses, q)
	return nil
}

// ExecContext runs q, prepared if it has been seen before.
func (t txc) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

// QueryContext runs q, prepared if it has been seen before.
func (t txc) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

// QueryRowContext runs q, prepared if it has been seen before.
func (t txc) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...)
}
