package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// Event types the ledger itself appends.
const (
	EventOperationCreated = "operation.created"
	EventOperationState   = "operation.state"
	EventBudgetReserved   = "budget.reserved"
	EventBudgetBlocked    = "budget.blocked"
	EventBudgetSettled    = "budget.settled"
	EventBudgetReleased   = "budget.released"
	EventBudgetSet        = "budget.set"
	EventBudgetDeleted    = "budget.deleted"
	EventLimitSet         = "limit.set"
	EventLimitDeleted     = "limit.deleted"
	EventFreezeSet        = "freeze.set"
	EventFreezeCleared    = "freeze.cleared"
	EventAgentCreated     = "agent.created"
	EventAgentRotated     = "agent.token_rotated"
	EventAgentRevoked     = "agent.revoked"
)

// ActorSystem is the actor of events tollgate causes on its own (recovery,
// auto-freeze, state moves whose caller named no actor).
const ActorSystem = "system"

// genesisHash is the prev_hash of the first event.
const genesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Event is one link of the tamper-evident audit chain.
type Event struct {
	Seq         int64           `json:"seq"`
	At          time.Time       `json:"at"`
	Type        string          `json:"type"`
	Actor       string          `json:"actor"`
	OperationID string          `json:"operation_id,omitempty"`
	Data        json.RawMessage `json:"data"`
	PrevHash    string          `json:"prev_hash"`
	Hash        string          `json:"hash"`
	// MAC is HMAC-SHA-256 of Hash under the chain key derived from the audit
	// key file; empty on events from before the key's boundary.
	MAC string `json:"mac,omitempty"`

	err error // a marshal failure of NewEvent, reported by Append so the call fails closed
	// prepared is set by prepareEvent: a journaled event, prepared when it
	// was recorded, is not compacted and scanned again when it is written.
	prepared bool
	// compact: Data is json.Marshal's output (NewEvent), valid and compact
	// already.
	compact bool
}

// NewEvent builds an event to append, marshalling data (a map or a struct) to
// JSON. A value that cannot be marshalled makes the Append that carries it fail.
func NewEvent(typ, actor, operationID string, data any) Event {
	e := Event{Type: typ, Actor: actor, OperationID: operationID}
	if data == nil {
		e.Data = json.RawMessage("{}")
		return e
	}
	b, err := json.Marshal(data)
	if err != nil {
		e.err = fmt.Errorf("marshal data of %s event: %w", typ, err)
		return e
	}
	e.Data, e.compact = b, true
	return e
}

// Append appends events to the chain in one BEGIN IMMEDIATE transaction.
func (db *DB) Append(ctx context.Context, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := db.write(ctx, func(tx *store.Tx) error { return db.appendTx(ctx, tx, events...) }); err != nil {
		return fmt.Errorf("append audit events: %w", err)
	}
	return nil
}

var eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)

// tokenRE matches tollgate agent tokens; audit data must never hold one, so any
// that slips into an event's data is replaced before it is hashed and stored.
var tokenRE = regexp.MustCompile(`tg_[A-Za-z0-9_-]{43}`)

// AppendTx appends events inside tx, a write transaction of the ledger's store:
// it reads the last link in that serialised transaction, so the chain stays
// linear however many processes append. Packages with their own tables
// (approvals) use it to write their rows and the events in one transaction.
func (db *DB) AppendTx(ctx context.Context, tx *store.Tx, events ...Event) error {
	return db.appendTx(ctx, tx, events...)
}

func (db *DB) appendTx(ctx context.Context, tx *store.Tx, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	prepared := make([]Event, len(events))
	for i, e := range events {
		var err error
		if prepared[i], err = db.prepareEvent(e); err != nil {
			return err
		}
	}

	if db.key == nil {
		// A process without the key must not extend a keyed chain: its plain
		// links would read as a forgery.
		var keyID string
		err := tx.QueryRowContext(ctx, `SELECT key_id FROM audit_keys`).Scan(&keyID)
		if err == nil {
			return fmt.Errorf("append audit event: %w", &KeyRequiredError{Path: db.st.String(), KeyID: keyID})
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("append audit event: read audit key record: %w", err)
		}
	}
	var lastSeq int64
	prev := genesisHash
	if h, ok := tx.Memo(chainHeadMemo); ok {
		head := h.(chainHead)
		lastSeq, prev = head.seq, head.hash
	} else {
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&lastSeq, &prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("append audit event: read chain head: %w", err)
		}
	}
	for i := range prepared {
		e := &prepared[i]
		e.Seq = lastSeq + 1
		e.PrevHash = prev
		e.Hash = chainHash(prev, e.Seq, e.At, e.Type, e.Actor, e.OperationID, e.Data)
		if db.key != nil {
			e.MAC = db.key.eventMAC(e.Hash)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_events (seq, at, type, actor, operation_id, data, prev_hash, hash, mac)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, e.Seq, e.At.UnixNano(), e.Type, e.Actor, e.OperationID, string(e.Data), e.PrevHash, e.Hash, e.MAC); err != nil {
			return fmt.Errorf("append audit event %s: %w", e.Type, err)
		}
		lastSeq, prev = e.Seq, e.Hash
	}
	tx.SetMemo(chainHeadMemo, chainHead{seq: lastSeq, hash: prev})
	return nil
}

// chainHeadMemo is where appendTx leaves the chain's head for the next
// append of the same group transaction (store.Tx.Memo): every append goes
// through appendTx, so within one write transaction the head it left is the
// head.
const chainHeadMemo = "ledger.audit.head"

type chainHead struct {
	seq  int64
	hash string
}

// prepareEvent checks e and puts it in the form that is hashed: type and
// actor checked, data compact JSON with any agent token redacted, At set and
// in UTC. It is idempotent, so a journaled event prepared at Record is
// prepared again unchanged when it is written.
func (db *DB) prepareEvent(e Event) (Event, error) {
	if e.err != nil {
		return e, fmt.Errorf("append audit event: %w", e.err)
	}
	if e.prepared {
		return e, nil
	}
	if !eventTypeRE.MatchString(e.Type) || len(e.Type) > 100 {
		return e, fmt.Errorf("append audit event: type %s must be dot-separated lower-case words such as \"budget.reserved\"", quoteInput(e.Type))
	}
	if e.Actor == "" {
		e.Actor = ActorSystem
	}
	compact := []byte(e.Data)
	if !e.compact {
		data := e.Data
		if len(bytes.TrimSpace(data)) == 0 {
			data = json.RawMessage("{}")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return e, fmt.Errorf("append audit event %s: data is not valid JSON: %w", e.Type, err)
		}
		compact = buf.Bytes()
	}
	if bytes.Contains(compact, []byte("tg_")) { // every match starts so: skip the regexp when none can
		compact = tokenRE.ReplaceAll(compact, []byte("tg_[redacted]"))
	}
	e.Data = json.RawMessage(compact)
	if e.At.IsZero() {
		e.At = db.now()
	}
	e.At = time.Unix(0, e.At.UnixNano()).UTC()
	e.prepared = true
	return e, nil
}

// chainHash is the link hash: hex(sha256(prev_hash || canonical(seq, at, type,
// actor, operation_id, data))). Each field of the canonical encoding is written as
// its byte length in decimal, ':', the bytes and '\n', so no two different events
// encode alike; at is RFC 3339 with nanoseconds in UTC; data is the stored JSON.
func chainHash(prev string, seq int64, at time.Time, typ, actor, operationID string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	field := func(h hash.Hash, b []byte) {
		h.Write([]byte(strconv.Itoa(len(b))))
		h.Write([]byte{':'})
		h.Write(b)
		h.Write([]byte{'\n'})
	}
	field(h, []byte(strconv.FormatInt(seq, 10)))
	field(h, []byte(at.UTC().Format(time.RFC3339Nano)))
	field(h, []byte(typ))
	field(h, []byte(actor))
	field(h, []byte(operationID))
	field(h, data)
	return hex.EncodeToString(h.Sum(nil))
}

// EventQuery filters Events. Zero fields do not filter.
type EventQuery struct {
	Since       time.Time // events at or after this time
	AfterSeq    int64     // events with a larger seq (resume a stream)
	OperationID string
	Types       []string
}

// Events streams matching events in seq order to fn, stopping at fn's first error
// (which it returns).
func (db *DB) Events(ctx context.Context, q EventQuery, fn func(Event) error) error {
	var where []string
	var args []any
	if !q.Since.IsZero() {
		where = append(where, "at >= ?")
		args = append(args, q.Since.UnixNano())
	}
	if q.AfterSeq > 0 {
		where = append(where, "seq > ?")
		args = append(args, q.AfterSeq)
	}
	if q.OperationID != "" {
		where = append(where, "operation_id = ? AND operation_id <> ''")
		args = append(args, q.OperationID)
	}
	if len(q.Types) > 0 {
		where = append(where, "type IN ("+store.Placeholders(len(q.Types))+")")
		for _, t := range q.Types {
			args = append(args, t)
		}
	}
	query := `SELECT ` + eventColumns + ` FROM audit_events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq"
	rows, err := db.st.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read audit events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return fmt.Errorf("read audit events: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read audit events: %w", err)
	}
	return nil
}

// eventColumns are the audit_events columns scanEvent reads, in its order.
const eventColumns = `seq, at, type, actor, operation_id, data, prev_hash, hash, mac`

func scanEvent(rows interface{ Scan(...any) error }) (Event, error) {
	var (
		e    Event
		at   int64
		data string
	)
	if err := rows.Scan(&e.Seq, &at, &e.Type, &e.Actor, &e.OperationID, &data, &e.PrevHash, &e.Hash, &e.MAC); err != nil {
		return Event{}, err
	}
	e.At = time.Unix(0, at).UTC()
	e.Data = json.RawMessage(data)
	return e, nil
}
