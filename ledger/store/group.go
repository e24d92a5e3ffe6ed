package store

import (
	"context"
	"errors"
	"fmt"
)

// maxGroup bounds how many callers' write functions one transaction carries,
// so one commit never waits on an unbounded batch.
const maxGroup = 128

// errClosed answers a write asked of a closed store.
var errClosed = errors.New("the database is closed")

// writeCall is one caller's write function waiting for the group writer.
type writeCall struct {
	ctx  context.Context
	fn   func(tx *Tx) error
	done chan error
	// records: fn only appends records (WriteRecords); its commit leaves
	// Generation where it was.
	records bool
}

// startWriter starts the group writer: callers of Write enqueue their
// function; one goroutine takes whatever is queued (up to maxGroup), runs the
// functions one after another in one serialised write transaction, each
// inside its own savepoint, commits once and answers each caller with its own
// result. Under contention many callers share one BEGIN IMMEDIATE and one
// commit; alone, a caller waits for nothing but its own transaction. It sits
// above Backend.BeginWrite, so every engine gets it.
func (s *Store) startWriter() {
	s.queue = make(chan *writeCall, maxGroup)
	s.writerDone = make(chan struct{})
	go func() {
		defer close(s.writerDone)
		for first := range s.queue {
			batch := []*writeCall{first}
		more:
			for len(batch) < maxGroup {
				select {
				case c, ok := <-s.queue:
					if !ok {
						break more
					}
					batch = append(batch, c)
				default:
					break more
				}
			}
			s.commitGroup(batch)
		}
	}()
}

// stopWriter refuses new writes, lets the writer finish what is queued and
// waits for it.
func (s *Store) stopWriter() {
	s.queueMu.Lock()
	if s.queue == nil || s.closed {
		s.closed = true
		s.queueMu.Unlock()
		return
	}
	s.closed = true
	close(s.queue)
	s.queueMu.Unlock()
	<-s.writerDone
}

// enqueue hands c to the group writer. Once it is queued, its outcome is
// awaited whatever c.ctx says: a write that committed must never be reported
// as failed.
func (s *Store) enqueue(c *writeCall) error {
	s.queueMu.RLock()
	defer s.queueMu.RUnlock()
	if s.closed {
		return errClosed
	}
	select {
	case s.queue <- c:
		return nil
	case <-c.ctx.Done():
		return fmt.Errorf("begin write: %w", c.ctx.Err())
	}
}

// commitGroup runs batch in one write transaction. A function that fails (or
// panics) has its savepoint rolled back and gets its own error; the others
// commit. If the transaction itself cannot begin or commit, every caller not
// already answered with its own error gets that one.
func (s *Store) commitGroup(batch []*writeCall) {
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- fmt.Errorf("begin write: %w", err)
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.Background() // the batch outlives any one caller's context
	results := make([]error, len(live))
	answer := func(common error) {
		for i, c := range live {
			if results[i] == nil {
				results[i] = common
			}
			c.done <- results[i]
		}
	}
	if err := s.b.Health(ctx); err != nil {
		answer(err)
		return
	}
	s.writes.Add(1)
	s.grouped.Add(uint64(len(live)))
	sqlTx, err := s.b.BeginWrite(ctx)
	if err != nil {
		answer(fmt.Errorf("begin write: %w", err))
		return
	}
	var misses []string
	memo := map[string]any{}
	savepoints := len(live) > 1
	abandon := func(cause error) {
		_ = sqlTx.Rollback()
		answer(cause)
	}
	for i, c := range live {
		if savepoints {
			if _, err := sqlTx.ExecContext(ctx, "SAVEPOINT grouped_write"); err != nil {
				abandon(fmt.Errorf("write abandoned: savepoint: %w", err))
				return
			}
		}
		err := runWrite(c.fn, &Tx{tx: sqlTx, s: s, cache: s.cache, misses: &misses, detached: true, memo: memo})
		if err == nil {
			if savepoints {
				if _, rerr := sqlTx.ExecContext(ctx, "RELEASE grouped_write"); rerr != nil {
					abandon(fmt.Errorf("write abandoned: release savepoint: %w", rerr))
					return
				}
			}
			continue
		}
		results[i] = err
		if !savepoints {
			abandon(nil)
			return
		}
		clear(memo) // what it described may be rolled back below
		if _, rerr := sqlTx.ExecContext(ctx, "ROLLBACK TO grouped_write"); rerr != nil {
			abandon(fmt.Errorf("write abandoned: a write grouped with this one failed and could not be undone: %w", rerr))
			return
		}
		if _, rerr := sqlTx.ExecContext(ctx, "RELEASE grouped_write"); rerr != nil {
			abandon(fmt.Errorf("write abandoned: release savepoint: %w", rerr))
			return
		}
	}
	err = sqlTx.Commit()
	// Before anyone is answered: a caller that reads after its write
	// returned must find the generation moved. A failed commit may have
	// changed something too (an unknown outcome), so it moves it as well.
	for _, c := range live {
		if !c.records {
			s.gen.Add(1)
			break
		}
	}
	if err != nil {
		answer(fmt.Errorf("commit: %w", err))
		return
	}
	if s.cache != nil {
		s.cache.prepare(ctx, s.b.Writer(), s.rebind, misses)
	}
	answer(nil)
}

// runWrite runs fn, turning a panic into that caller's error so the writer
// (and every other caller of its batch) survives it.
func runWrite(fn func(tx *Tx) error, tx *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write function panicked: %v", r)
		}
	}()
	return fn(tx)
}
