package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// State is where an Operation is in its life; see docs/ARCHITECTURE.md.
type State string

// The Operation states. Terminal: succeeded, failed, denied, expired, cancelled.
const (
	StatePlanned          State = "planned"
	StateAuthorized       State = "authorized"
	StateReserved         State = "reserved"
	StateAwaitingApproval State = "awaiting_approval"
	StateApproved         State = "approved"
	StateExecuting        State = "executing"
	StateSucceeded        State = "succeeded"
	StateFailed           State = "failed"
	StateDenied           State = "denied"
	StateExpired          State = "expired"
	StateInDoubt          State = "in_doubt"
	StateCancelled        State = "cancelled"
)

// transitions is the state machine: the states each state may move to.
// in_doubt is only left once Cloudflare has been asked what really happened:
// to succeeded or failed, or back to executing when the answer is a
// multi-step change (a gradual rollout) stopped half-way, which goes on.
var transitions = map[State][]State{
	StatePlanned:          {StateAuthorized, StateDenied, StateFailed, StateCancelled},
	StateAuthorized:       {StateReserved, StateDenied, StateFailed, StateCancelled},
	StateReserved:         {StateAwaitingApproval, StateApproved, StateExecuting, StateDenied, StateFailed, StateCancelled},
	StateAwaitingApproval: {StateApproved, StateDenied, StateExpired, StateCancelled, StateFailed},
	StateApproved:         {StateExecuting, StateDenied, StateExpired, StateCancelled, StateFailed},
	StateExecuting:        {StateSucceeded, StateFailed, StateInDoubt},
	StateInDoubt:          {StateSucceeded, StateFailed, StateExecuting},
}

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateDenied, StateExpired, StateCancelled:
		return true
	}
	return false
}

// Holding reports whether an operation in state s holds budget: exactly reserved,
// awaiting_approval, approved, executing and in_doubt.
func (s State) Holding() bool {
	switch s {
	case StateReserved, StateAwaitingApproval, StateApproved, StateExecuting, StateInDoubt:
		return true
	}
	return false
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok || s.Terminal()
}

// CanMove reports whether the state machine allows from -> to.
func CanMove(from, to State) bool { return slices.Contains(transitions[from], to) }

// ClientInfo is the MCP client behind a call, kept for audit, never for trust.
type ClientInfo struct {
	Name      string `json:"name,omitempty"`
	Version   string `json:"version,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Transport string `json:"transport,omitempty"`
}

// NewOperation is what CreateOperation records.
type NewOperation struct {
	Agent, Team, Tool string
	Resource          string          // e.g. "domain:example.dev", "worker_script:web-app"
	Args              json.RawMessage // normalised args; never the Worker source
	ArgsHash          string          // hex sha256 of the canonical normalised args (incl. module sha)
	Reason            string
	IdempotencyKey    string // "" => derived from agent + tool + ArgsHash within the window
	Client            ClientInfo
	Blob              []byte // optional content (Worker module) stored once, keyed by sha256
}

// Commitment is a once-per-key charge, e.g. "workers-paid-plan:2026-11": the first
// operation settled with the key is charged its amount, later ones are not.
type Commitment struct {
	Key    string      `json:"key"`
	Amount money.Money `json:"amount"`
}

// Operation is the durable record of one mutating call.
type Operation struct {
	ID             string          `json:"id"` // "op_" + 26 lower-case base32 characters: creation time, then 82 random bits (newOperationID)
	Agent          string          `json:"agent"`
	Team           string          `json:"team"`
	Tool           string          `json:"tool"`
	Resource       string          `json:"resource"`
	Args           json.RawMessage `json:"args"`
	ArgsHash       string          `json:"args_hash"`
	Reason         string          `json:"reason"`
	IdempotencyKey string          `json:"idempotency_key"`
	KeyDerived     bool            `json:"key_derived"`
	BlobSHA256     string          `json:"blob_sha256,omitempty"`
	Client         ClientInfo      `json:"client"`
	State          State           `json:"state"`
	Quote          money.Money     `json:"quote"`                // the reserved maximum (zero before reserve)
	Commitment     *Commitment     `json:"commitment,omitempty"` // set by Reserve when the request carried one
	Charged        *money.Money    `json:"charged,omitempty"`    // set by Settle: what the budgets were charged
	Result         json.RawMessage `json:"result,omitempty"`
	// ErrorCode is a machine code (policy_denied, budget_exceeded, velocity_exceeded,
	// frozen, currency_mismatch, price_changed, cloudflare_error, interrupted, expired,
	// denied_by_approver, cancelled, …); Error is a human sentence.
	ErrorCode string     `json:"error_code,omitempty"`
	Error     string     `json:"error,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // approval expiry while awaiting_approval
	// LeaseID is the lease of the process that moved the operation last, the
	// one working on it; "" for a process without one (a CLI command).
	LeaseID   string    `json:"lease_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Sentinel errors; match them with errors.Is.
var (
	ErrNotFound            = errors.New("not found")
	ErrIdempotencyConflict = errors.New("idempotency key already used with different arguments")
	ErrStateConflict       = errors.New("operation state conflict")
)

// StateConflictError says why an operation could not move: its actual state was
// not one the caller expected, or the move is not in the state machine, or the move
// must go through Reserve, Settle or Release. It matches ErrStateConflict.
type StateConflictError struct {
	OperationID string
	Actual      State   // the state the operation is really in
	To          State   // the state asked for
	Want        []State // the states the caller required (nil: any)
	Reason      string
}

// Error names the operation, its actual state and why it could not move.
func (e *StateConflictError) Error() string {
	return fmt.Sprintf("operation %s is %s: %s", e.OperationID, e.Actual, e.Reason)
}

// Is makes errors.Is(err, ErrStateConflict) true.
func (e *StateConflictError) Is(target error) bool { return target == ErrStateConflict }

// opColumns is the column list scanOperation reads.
const opColumns = `id, agent, team, tool, resource, args, args_hash, reason, idempotency_key, key_derived,
	COALESCE(blob_sha256, ''), client_name, client_version, client_session, client_transport, state, currency, quote_micros,
	charged_micros, commitment_key, commitment_micros, result, error_code, error, expires_at, COALESCE(lease_id, ''), created_at, updated_at`

func scanOperation(row interface{ Scan(...any) error }) (Operation, error) {
	var (
		op                       Operation
		args                     string
		derived                  bool
		state, currency          string
		quote                    int64
		charged, commitMicros    sql.NullInt64
		commitKey, result        sql.NullString
		expires                  sql.NullInt64
		created, updated         int64
		clientName, clientVer    string
		clientSession, clientTrn string
	)
	if err := row.Scan(&op.ID, &op.Agent, &op.Team, &op.Tool, &op.Resource, &args, &op.ArgsHash, &op.Reason, &op.IdempotencyKey, &derived,
		&op.BlobSHA256, &clientName, &clientVer, &clientSession, &clientTrn, &state, &currency, &quote,
		&charged, &commitKey, &commitMicros, &result, &op.ErrorCode, &op.Error, &expires, &op.LeaseID, &created, &updated); err != nil {
		return Operation{}, err
	}
	op.Args = json.RawMessage(args)
	op.KeyDerived = derived
	op.Client = ClientInfo{Name: clientName, Version: clientVer, SessionID: clientSession, Transport: clientTrn}
	op.State = State(state)
	op.Quote = money.Money{Micros: quote, Currency: currency}
	if charged.Valid {
		op.Charged = &money.Money{Micros: charged.Int64, Currency: currency}
	}
	if commitKey.Valid {
		op.Commitment = &Commitment{Key: commitKey.String, Amount: money.Money{Micros: commitMicros.Int64, Currency: currency}}
	}
	if result.Valid {
		op.Result = json.RawMessage(result.String)
	}
	if expires.Valid {
		t := time.Unix(0, expires.Int64).UTC()
		op.ExpiresAt = &t
	}
	op.CreatedAt = time.Unix(0, created).UTC()
	op.UpdatedAt = time.Unix(0, updated).UTC()
	return op, nil
}

// operationHead reads what a reservation decides on before it moves the
// operation: only ID, Agent, Team and State are set. The move's UPDATE
// returns the whole row.
func operationHead(ctx context.Context, q store.Queryer, id string) (Operation, error) {
	return readOperation(ctx, q, id, `id, agent, team, state`, func(row interface{ Scan(...any) error }) (Operation, error) {
		var op Operation
		err := row.Scan(&op.ID, &op.Agent, &op.Team, &op.State)
		return op, err
	})
}

func getOperation(ctx context.Context, q store.Queryer, id string) (Operation, error) {
	return readOperation(ctx, q, id, opColumns, scanOperation)
}

// readOperation reads columns of operation id with scan: a malformed id,
// and one no operation has, are errors that say so.
func readOperation(ctx context.Context, q store.Queryer, id, columns string, scan func(row interface{ Scan(...any) error }) (Operation, error)) (Operation, error) {
	if err := checkOperationID(id); err != nil {
		return Operation{}, err
	}
	op, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Operation{}, fmt.Errorf("operation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("read operation %s: %w", id, err)
	}
	return op, nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix + n characters of crypto-random lower-case base32.
func newID(prefix string, n int) string {
	b := make([]byte, (n*5+7)/8)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the runtime guarantees it does not
	}
	return prefix + idEncoding.EncodeToString(b)[:n]
}

// newOperationID is "op_" + 26 lower-case base32 characters (130 bits): the
// creation time in milliseconds (48 bits) followed by 82 crypto-random bits.
// Ids made close in time sort close together, so an operation's rows in the
// indexes keyed by its id (its holds, its audit events) land beside those of
// the operations made just before it, and a group commit writes a few shared
// index pages instead of one page per operation.
func newOperationID(now time.Time) string {
	var b [17]byte // 6 bytes of time, then randomness; 26 of its 27 characters are kept
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[5-i] = byte(ms >> (8 * i))
	}
	if _, err := rand.Read(b[6:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the runtime guarantees it does not
	}
	return "op_" + idEncoding.EncodeToString(b[:])[:26]
}

func checkOperationID(id string) error {
	ok := len(id) == 29 && strings.HasPrefix(id, "op_")
	for i := 3; ok && i < len(id); i++ {
		c := id[i]
		ok = (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')
	}
	if !ok {
		return fmt.Errorf("operation id %s is malformed: expected \"op_\" followed by 26 lower-case letters and digits 2-7: %w", quoteInput(id), ErrNotFound)
	}
	return nil
}

// checkName accepts agent and team names: 1–64 characters of letters, digits,
// '.', '_' and '-', starting with a letter or digit. They appear in scopes
// ("agent:<name>"), so ':' and spaces are out.
func checkName(what, s string) error {
	ok := s != "" && len(s) <= 64 && isAlnum(s[0])
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = isAlnum(c) || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s name %s is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", what, quoteInput(s))
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// checkIdempotencyKey accepts 1–200 printable ASCII characters without spaces. The
// "auto:" prefix is reserved for derived keys, so a caller cannot collide with one.
func checkIdempotencyKey(k string) error {
	ok := len(k) <= 200 && !strings.HasPrefix(k, "auto:")
	for i := 0; ok && i < len(k); i++ {
		ok = k[i] > ' ' && k[i] < 0x7f
	}
	if !ok {
		return fmt.Errorf("idempotency key %s is not valid: use 1-200 printable ASCII characters without spaces, not starting with \"auto:\" (reserved for derived keys)", quoteInput(k))
	}
	return nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (n *NewOperation) validate() error {
	var problems []string
	if err := checkName("agent", n.Agent); err != nil {
		problems = append(problems, err.Error())
	}
	if n.Team != "" {
		if err := checkName("team", n.Team); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if n.Tool == "" || len(n.Tool) > 64 {
		problems = append(problems, "tool must be a name of 1-64 characters")
	}
	if !isHex64(n.ArgsHash) {
		problems = append(problems, fmt.Sprintf("args hash %s must be 64 lower-case hex characters (sha256)", quoteInput(n.ArgsHash)))
	}
	if len(n.Args) > 0 && !json.Valid(n.Args) {
		problems = append(problems, "args are not valid JSON")
	}
	if n.IdempotencyKey != "" {
		if err := checkIdempotencyKey(n.IdempotencyKey); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// terminalNoReuse are the states a derived key never reuses: a retry of a call that
// failed or was refused must be able to try again.
var terminalNoReuse = []State{StateFailed, StateDenied, StateExpired, StateCancelled}

// CreateOperation records a new operation in state planned, or returns the
// existing one for the same idempotency key (created == false), in one BEGIN
// IMMEDIATE transaction so racing identical calls — in any process — get one
// operation.
//
// With an explicit key, (agent, key) is unique: the same ArgsHash and tool return
// the existing operation, anything else is ErrIdempotencyConflict (a key is never
// rebound). With no key, the newest operation of the same agent, tool and ArgsHash
// created within the derived-key window and not failed, denied, expired or
// cancelled is returned; otherwise a new one gets the key
// "auto:<first 16 hex of ArgsHash>:<unix seconds>" (with ":2", ":3", … appended if
// that exact key was already taken in the same second) and KeyDerived = true.
//
// A new operation gets an "operation.created" event plus events (whose OperationID
// defaults to the new id); a returned existing one writes nothing.
func (db *DB) CreateOperation(ctx context.Context, n NewOperation, events ...Event) (Operation, bool, error) {
	if err := n.validate(); err != nil {
		return Operation{}, false, fmt.Errorf("create operation: %w", err)
	}
	args := n.Args
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage("{}")
	} else {
		var buf bytes.Buffer
		_ = json.Compact(&buf, args) // validated above
		args = buf.Bytes()
	}
	var (
		op      Operation
		created bool
	)
	err := db.write(ctx, func(tx *store.Tx) error {
		now := db.now()
		key := n.IdempotencyKey
		if key != "" {
			existing, err := scanOperation(tx.QueryRowContext(ctx, `SELECT `+opColumns+` FROM operations WHERE agent = ? AND idempotency_key = ?`, n.Agent, key))
			switch {
			case err == nil:
				if existing.ArgsHash != n.ArgsHash || existing.Tool != n.Tool {
					return fmt.Errorf("key %s of agent %s is bound to operation %s (%s with other arguments); use a new key for different arguments: %w",
						quoteInput(key), n.Agent, existing.ID, existing.Tool, ErrIdempotencyConflict)
				}
				op = existing
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up idempotency key: %w", err)
			}
		} else {
			since := now.Add(-db.derivedWindow).UnixNano()
			existing, err := scanOperation(tx.QueryRowContext(ctx, `SELECT `+opColumns+` FROM operations
				WHERE agent = ? AND args_hash = ? AND tool = ? AND created_at >= ? AND state NOT IN (?, ?, ?, ?)
				ORDER BY seq DESC LIMIT 1`,
				n.Agent, n.ArgsHash, n.Tool, since, terminalNoReuse[0], terminalNoReuse[1], terminalNoReuse[2], terminalNoReuse[3]))
			switch {
			case err == nil:
				op = existing
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up derived key: %w", err)
			}
			base := "auto:" + n.ArgsHash[:16] + ":" + strconv.FormatInt(now.Unix(), 10)
			key = base
			for i := 2; ; i++ {
				var taken int
				if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM operations WHERE agent = ? AND idempotency_key = ?`, n.Agent, key).Scan(&taken); err != nil {
					return fmt.Errorf("look up derived key: %w", err)
				}
				if taken == 0 {
					break
				}
				key = base + ":" + strconv.Itoa(i)
			}
		}

		var blobSHA any
		if n.Blob != nil {
			sum := sha256.Sum256(n.Blob)
			h := hex.EncodeToString(sum[:])
			if _, err := tx.ExecContext(ctx, `INSERT INTO blobs (sha256, size, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING`,
				h, len(n.Blob), n.Blob, now.UnixNano()); err != nil {
				return fmt.Errorf("store blob: %w", err)
			}
			blobSHA = h
		}
		id := newOperationID(now)
		if _, err := tx.ExecContext(ctx, `INSERT INTO operations (id, agent, team, tool, resource, args, args_hash, reason, idempotency_key, key_derived,
			blob_sha256, client_name, client_version, client_session, client_transport, state, lease_id, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, n.Agent, n.Team, n.Tool, n.Resource, string(args), n.ArgsHash, n.Reason, key, n.IdempotencyKey == "",
			blobSHA, n.Client.Name, n.Client.Version, n.Client.SessionID, n.Client.Transport, StatePlanned, db.leaseID(), now.UnixNano(), now.UnixNano()); err != nil {
			return fmt.Errorf("insert operation: %w", err)
		}
		created = true
		var err error
		op, err = getOperation(ctx, tx, id)
		if err != nil {
			return err
		}
		all := append([]Event{NewEvent(EventOperationCreated, "agent:"+n.Agent, id, map[string]any{
			"agent": n.Agent, "team": n.Team, "tool": n.Tool, "resource": n.Resource, "args": args, "args_hash": n.ArgsHash,
			"reason": n.Reason, "idempotency_key": key, "key_derived": op.KeyDerived, "client": n.Client, "blob_sha256": op.BlobSHA256,
		})}, withOperationID(events, id)...)
		return db.appendTx(ctx, tx, all...)
	})
	if err != nil {
		return Operation{}, false, fmt.Errorf("create operation: %w", err)
	}
	return op, created, nil
}

// withOperationID fills in OperationID where the caller left it empty.
func withOperationID(events []Event, id string) []Event {
	out := make([]Event, len(events))
	for i, e := range events {
		if e.OperationID == "" {
			e.OperationID = id
		}
		out[i] = e
	}
	return out
}

// Operation reads one operation.
func (db *DB) Operation(ctx context.Context, id string) (Operation, error) {
	return getOperation(ctx, db.st, id)
}

// OperationQuery filters ListOperations. Limit defaults to 20 and may be at most 100.
type OperationQuery struct {
	Agent, Team string
	States      []State
	Cursor      string // from the previous page; "" for the first
	Limit       int
}

// ListOperations returns matching operations newest first and the cursor of the
// next page ("" when there is none).
func (db *DB) ListOperations(ctx context.Context, q OperationQuery) ([]Operation, string, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = 20
	case limit < 0 || limit > 100:
		return nil, "", fmt.Errorf("list operations: limit %d is out of range; use 1-100 (0 means 20)", q.Limit)
	}
	var where []string
	var args []any
	if q.Agent != "" {
		where = append(where, "agent = ?")
		args = append(args, q.Agent)
	}
	if q.Team != "" {
		where = append(where, "team = ?")
		args = append(args, q.Team)
	}
	if len(q.States) > 0 {
		for _, s := range q.States {
			if !s.Valid() {
				return nil, "", fmt.Errorf("list operations: unknown state %s; use one of %s", quoteInput(string(s)), allStatesText())
			}
			args = append(args, s)
		}
		where = append(where, "state IN ("+store.Placeholders(len(q.States))+")")
	}
	if q.Cursor != "" {
		seq, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list operations: %w", err)
		}
		where = append(where, "seq < ?")
		args = append(args, seq)
	}
	query := `SELECT seq, ` + opColumns + ` FROM operations`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := db.st.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list operations: %w", err)
	}
	defer rows.Close()
	var (
		ops  []Operation
		seqs []int64
	)
	for rows.Next() {
		var seq int64
		op, err := scanOperation(seqScanner{rows, &seq})
		if err != nil {
			return nil, "", fmt.Errorf("list operations: %w", err)
		}
		ops = append(ops, op)
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list operations: %w", err)
	}
	next := ""
	if len(ops) > limit {
		ops = ops[:limit]
		next = encodeCursor(seqs[limit-1])
	}
	return ops, next, nil
}

// seqScanner prepends the seq column to a scanOperation scan.
type seqScanner struct {
	rows *sql.Rows
	seq  *int64
}

// Scan scans seq, then dest.
func (s seqScanner) Scan(dest ...any) error {
	return s.rows.Scan(append([]any{s.seq}, dest...)...)
}

const cursorPrefix = "c1."

// encodeCursor makes the opaque page cursor: a version tag and the seq of the last
// operation returned.
func encodeCursor(seq int64) string {
	return cursorPrefix + base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10)))
}

// decodeCursor parses a cursor an agent passed back; it is untrusted input.
func decodeCursor(c string) (int64, error) {
	bad := fmt.Errorf("cursor %s is not valid: pass back exactly the next_cursor of the previous page, or nothing for the first page", quoteInput(c))
	if !strings.HasPrefix(c, cursorPrefix) || len(c) > 40 {
		return 0, bad
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(c[len(cursorPrefix):])
	if err != nil {
		return 0, bad
	}
	seq, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || seq <= 0 || strconv.FormatInt(seq, 10) != string(raw) {
		return 0, bad
	}
	return seq, nil
}

func allStatesText() string {
	return "planned, authorized, reserved, awaiting_approval, approved, executing, succeeded, failed, denied, expired, in_doubt, cancelled"
}

// History returns the operation's audit events in order.
func (db *DB) History(ctx context.Context, id string) ([]Event, error) {
	if _, err := db.Operation(ctx, id); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var out []Event
	err := db.Events(ctx, EventQuery{OperationID: id}, func(e Event) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", id, err)
	}
	return out, nil
}

// TransitionOpts qualifies a Transition.
type TransitionOpts struct {
	From      []State // the states the caller expects the operation in; empty: any
	ErrorCode string  // set on the operation when non-empty
	Error     string
	Result    json.RawMessage // set when non-nil
	ExpiresAt *time.Time      // set when non-nil (approval expiry)
	Actor     string          // default "system"

	// quote, set by Reserve, writes the reservation's quote and commitment
	// in the same UPDATE as the move.
	quote *quoteUpdate
}

// quoteUpdate is what a reservation records on its operation.
type quoteUpdate struct {
	amount           money.Money
	commitmentKey    any // string, or nil for none
	commitmentMicros any // int64, or nil
}

// Transition moves an operation to state to in one transaction: it checks the
// current state is in o.From (else a *StateConflictError naming the actual state),
// that the move is in the state machine, updates the row and appends
// "operation.state" {from, to, code, error} plus events (OperationID defaults to
// id). Moves that change holds are refused with a *StateConflictError: into
// reserved (use Reserve), and into a terminal state while holds exist (use Settle
// or Release).
func (db *DB) Transition(ctx context.Context, id string, to State, o TransitionOpts, events ...Event) (Operation, error) {
	if !to.Valid() {
		return Operation{}, fmt.Errorf("transition %s: unknown state %s; use one of %s", id, quoteInput(string(to)), allStatesText())
	}
	if len(o.Result) > 0 && !json.Valid(o.Result) {
		return Operation{}, fmt.Errorf("transition %s: result is not valid JSON", id)
	}
	var op Operation
	err := db.write(ctx, func(tx *store.Tx) error {
		cur, err := getOperation(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := checkMove(cur, to, o.From); err != nil {
			return err
		}
		if to == StateReserved {
			return &StateConflictError{OperationID: id, Actual: cur.State, To: to, Want: o.From, Reason: "only Reserve moves an operation to reserved (it places the holds)"}
		}
		if to.Terminal() {
			var holds int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM holds WHERE operation_id = ?`, id).Scan(&holds); err != nil {
				return fmt.Errorf("count holds: %w", err)
			}
			if holds > 0 {
				use := "Release"
				if to == StateSucceeded {
					use = "Settle"
				}
				return &StateConflictError{OperationID: id, Actual: cur.State, To: to, Want: o.From,
					Reason: fmt.Sprintf("it holds budget, so it moves to %s only through %s", to, use)}
			}
		}
		op, err = db.applyTransition(ctx, tx, cur, to, o, events)
		return err
	})
	if err != nil {
		return Operation{}, fmt.Errorf("transition %s to %s: %w", id, to, err)
	}
	return op, nil
}

// checkMove verifies the expected and legal parts of a move.
func checkMove(cur Operation, to State, from []State) error {
	if len(from) > 0 && !slices.Contains(from, cur.State) {
		return &StateConflictError{OperationID: cur.ID, Actual: cur.State, To: to, Want: from,
			Reason: fmt.Sprintf("expected %s", joinStates(from))}
	}
	if !CanMove(cur.State, to) {
		reason := fmt.Sprintf("%s -> %s is not a legal move", cur.State, to)
		if cur.State.Terminal() {
			reason = fmt.Sprintf("%s is terminal; it cannot move to %s", cur.State, to)
		} else {
			reason += fmt.Sprintf(" (from %s it may move to %s)", cur.State, joinStates(transitions[cur.State]))
		}
		return &StateConflictError{OperationID: cur.ID, Actual: cur.State, To: to, Want: from, Reason: reason}
	}
	return nil
}

func joinStates(s []State) string {
	parts := make([]string, len(s))
	for i, st := range s {
		parts[i] = string(st)
	}
	return strings.Join(parts, " or ")
}

// applyTransition updates the row and appends the state event and extra events.
// The caller has checked the move.
func (db *DB) applyTransition(ctx context.Context, tx *store.Tx, cur Operation, to State, o TransitionOpts, events []Event) (Operation, error) {
	now := db.now()
	var result, expires any
	if o.Result != nil {
		var buf bytes.Buffer
		if err := json.Compact(&buf, o.Result); err != nil {
			return Operation{}, fmt.Errorf("result is not valid JSON: %w", err)
		}
		result = buf.String()
	}
	if o.ExpiresAt != nil {
		expires = o.ExpiresAt.UnixNano()
	}
	var currency, quote, commitKey, commitMicros any
	if q := o.quote; q != nil {
		currency, quote, commitKey, commitMicros = q.amount.Currency, q.amount.Micros, q.commitmentKey, q.commitmentMicros
	}
	op, err := scanOperation(tx.QueryRowContext(ctx, `UPDATE operations SET state = ?1, updated_at = ?2,
		error_code = CASE WHEN ?3 <> '' THEN ?3 ELSE error_code END,
		error = CASE WHEN ?4 <> '' THEN ?4 ELSE error END,
		result = COALESCE(?5, result),
		expires_at = COALESCE(?6, expires_at),
		lease_id = COALESCE(?8, lease_id),
		currency = COALESCE(?9, currency),
		quote_micros = COALESCE(?10, quote_micros),
		commitment_key = CASE WHEN ?10 IS NULL THEN commitment_key ELSE ?11 END,
		commitment_micros = CASE WHEN ?10 IS NULL THEN commitment_micros ELSE ?12 END
		WHERE id = ?7 RETURNING `+opColumns,
		to, now.UnixNano(), o.ErrorCode, o.Error, result, expires, cur.ID, db.leaseID(), currency, quote, commitKey, commitMicros))
	if err != nil {
		return Operation{}, fmt.Errorf("update operation: %w", err)
	}
	actor := o.Actor
	if actor == "" {
		actor = ActorSystem
	}
	data := map[string]any{"from": cur.State, "to": to}
	if o.ErrorCode != "" {
		data["code"] = o.ErrorCode
	}
	if o.Error != "" {
		data["error"] = o.Error
	}
	all := append([]Event{NewEvent(EventOperationState, actor, cur.ID, data)}, withOperationID(events, cur.ID)...)
	if err := db.appendTx(ctx, tx, all...); err != nil {
		return Operation{}, err
	}
	return op, nil
}

// Blob returns content stored by CreateOperation, by its hex sha256.
func (db *DB) Blob(ctx context.Context, sha256hex string) ([]byte, error) {
	if !isHex64(sha256hex) {
		return nil, fmt.Errorf("blob %s: expected 64 lower-case hex characters: %w", quoteInput(sha256hex), ErrNotFound)
	}
	var data []byte
	err := db.st.QueryRowContext(ctx, `SELECT data FROM blobs WHERE sha256 = ?`, sha256hex).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("blob %s: %w", sha256hex, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", sha256hex, err)
	}
	return data, nil
}

// States reads the state of each of ids in one query; ids that do not exist
// are left out. Waiters use it to learn which of their operations another
// process moved.
func (db *DB) States(ctx context.Context, ids []string) (map[string]State, error) {
	out := make(map[string]State, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := db.st.QueryContext(ctx, `SELECT id, state FROM operations WHERE id IN (`+store.Placeholders(len(ids))+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("read states: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var s State
		if err := rows.Scan(&id, &s); err != nil {
			return nil, fmt.Errorf("read states: %w", err)
		}
		out[id] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read states: %w", err)
	}
	return out, nil
}
