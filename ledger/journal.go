package ledger

import (
	"context"
	"fmt"
	"sync"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// A journal holds the pure-record audit events of one call (the call
// received, a read-only policy decision, a Cloudflare request made): events
// that describe what happened but change no state and need not precede any
// external effect. They are written in the transaction of the call's next
// state change (CreateOperation, Transition, Reserve, Settle, Release, any
// ledger write), in the order recorded and before that change's own events,
// or by Flush at the end of the call: one commit instead of one per event.
//
// An event that must be durable before something happens outside tollgate
// (a token minted for an execution, before the token is used) is not a pure
// record: write it with Append, or with the state change that precedes the
// effect.
type journal struct {
	mu     sync.Mutex
	events []Event
	ended  bool // Flush ran: later records are appended at once
}

type journalKey struct{}

// WithJournal returns ctx carrying a journal for one call's pure-record
// events, and true; or ctx unchanged and false when it already carries one
// (the caller that made it flushes it).
func WithJournal(ctx context.Context) (context.Context, bool) {
	if _, ok := ctx.Value(journalKey{}).(*journal); ok {
		return ctx, false
	}
	return context.WithValue(ctx, journalKey{}, &journal{}), true
}

func journalFrom(ctx context.Context) *journal {
	j, _ := ctx.Value(journalKey{}).(*journal)
	return j
}

// take empties the journal and returns what it held.
func (j *journal) take() []Event {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	evs := j.events
	j.events = nil
	return evs
}

// putBack returns events a failed write took, ahead of any recorded since.
func (j *journal) putBack(evs []Event) {
	if j == nil || len(evs) == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(evs, j.events...)
}

// Record adds pure-record events to the audit trail: to ctx's journal when it
// carries one (see WithJournal), written with the call's next ledger write or
// by Flush; at once (Append) otherwise. Each event is checked and timestamped
// now, so a bad event fails here, not the state change it would ride with.
//
// Work that outlives the call but kept its context (a timer started by it)
// finds the journal ended by Flush, and its records are appended at once.
func (db *DB) Record(ctx context.Context, events ...Event) error {
	j := journalFrom(ctx)
	if j == nil || j.isEnded() {
		return db.Append(ctx, events...)
	}
	prepared := make([]Event, 0, len(events))
	for _, e := range events {
		p, err := db.prepareEvent(e)
		if err != nil {
			return err
		}
		prepared = append(prepared, p)
	}
	j.mu.Lock()
	if j.ended {
		j.mu.Unlock()
		return db.Append(ctx, prepared...)
	}
	j.events = append(j.events, prepared...)
	j.mu.Unlock()
	return nil
}

func (j *journal) isEnded() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.ended
}

// Flush ends ctx's journal, writing the events waiting in it in one
// transaction; records made in ctx afterwards are appended at once. The work
// that made the journal calls it when it ends, and answers with a refusal
// if it fails: then nothing of what waited is on record.
func (db *DB) Flush(ctx context.Context) error {
	j := journalFrom(ctx)
	if j == nil {
		return nil
	}
	j.mu.Lock()
	j.ended = true
	evs := j.events
	j.events = nil
	j.mu.Unlock()
	if len(evs) == 0 {
		return nil
	}
	if err := db.st.WriteRecords(ctx, func(tx *store.Tx) error { return db.appendTx(ctx, tx, evs...) }); err != nil {
		return fmt.Errorf("append audit events: %w", err)
	}
	return nil
}

// write runs fn in one serialised write transaction of the store, first
// appending the events waiting in ctx's journal: a call's records commit with
// its next state change. If the transaction fails they stay in the journal.
func (db *DB) write(ctx context.Context, fn func(tx *store.Tx) error) error {
	j := journalFrom(ctx)
	evs := j.take()
	err := db.st.Write(ctx, func(tx *store.Tx) error {
		if err := db.appendTx(ctx, tx, evs...); err != nil {
			return err
		}
		return fn(tx)
	})
	if err != nil {
		j.putBack(evs)
	}
	return err
}
