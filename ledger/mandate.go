package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// A mandate is a standing approval: an approver lets one agent run one
// action on resources matching a pattern, up to a count, a per-call and a
// total amount, until an expiry. Reserve consumes it in the reservation's
// own write transaction, so racing calls can never use it more often or for
// more than it allows. A covered operation that ends without a charge
// (Release) gives its use back in the release's transaction; a settled one
// keeps it.

// Audit event types of mandates.
const (
	EventMandateCreated = "mandate.created"
	EventMandateUsed    = "mandate.used"
	EventMandateRevoked = "mandate.revoked"
	// EventMandateUseReturned: the operation a mandate covered ended
	// without a charge, so its use and amount were given back.
	EventMandateUseReturned = "mandate.use_returned"
)

// MaxMandateLifetime bounds a mandate's expiry.
const MaxMandateLifetime = 7 * 24 * time.Hour

// MaxMandateCount bounds how many calls one mandate may cover.
const MaxMandateCount = 100

// Mandate is one standing approval.
type Mandate struct {
	ID         string      `json:"id"` // "man_" + 26 random base32 characters
	Agent      string      `json:"agent"`
	Action     string      `json:"action"`   // the tool, e.g. register_domain
	Pattern    string      `json:"resource"` // "*.dev", "shop-*" or an exact name
	MaxPerCall money.Money `json:"max_per_call"`
	MaxTotal   money.Money `json:"max_total"`
	Count      int         `json:"count"` // calls it may cover
	Used       int         `json:"used"`
	UsedMicros int64       `json:"used_micros"`
	CreatedBy  string      `json:"created_by"`
	CreatedAt  time.Time   `json:"created_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	RevokedAt  *time.Time  `json:"revoked_at,omitempty"`
	RevokedBy  string      `json:"revoked_by,omitempty"`
}

// Active reports whether m may still cover a call at now.
func (m Mandate) Active(now time.Time) bool {
	return m.RevokedAt == nil && now.Before(m.ExpiresAt) && m.Used < m.Count && m.UsedMicros < m.MaxTotal.Micros
}

var (
	patternChars = regexp.MustCompile(`^\*?[a-z0-9.-]*[a-z0-9][a-z0-9.-]*\*?$`)
)

// ValidMandatePattern checks a resource pattern: an exact name, "*.dev"
// (a suffix), "shop-*" (a prefix); one "*" at most, at either end, never "*" alone.
func ValidMandatePattern(p string) error {
	const allowed = `an exact name (shop-api, launch.dev), a suffix (*.dev) or a prefix (shop-*): lower-case letters, digits, "." and "-", one "*" at the start or the end`
	switch {
	case p == "*" || p == "":
		return fmt.Errorf("resource pattern %q matches everything; use %s", p, allowed)
	case len(p) > 253:
		return fmt.Errorf("resource pattern is %d characters; at most 253", len(p))
	case strings.Count(p, "*") > 1 || !patternChars.MatchString(p) || (strings.HasPrefix(p, "*") && strings.HasSuffix(p, "*")):
		return fmt.Errorf("resource pattern %s: use %s", quoteInput(p), allowed)
	}
	return nil
}

// MatchesPattern reports whether name (a domain or Worker script name)
// matches a mandate pattern.
func MatchesPattern(pattern, name string) bool {
	switch {
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(name, pattern[1:]) && len(name) > len(pattern)-1
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(name, pattern[:len(pattern)-1]) && len(name) > len(pattern)-1
	}
	return name == pattern
}

// Validate reports every problem of a new mandate at now at once (the checks
// CreateMandate runs), so a channel can refuse before it writes anything.
func (m Mandate) Validate(now time.Time) error { return m.validate(now) }

func (m Mandate) validate(now time.Time) error {
	var problems []string
	if strings.TrimSpace(m.Agent) == "" {
		problems = append(problems, "agent is required")
	}
	if strings.TrimSpace(m.Action) == "" {
		problems = append(problems, "action is required")
	}
	if err := ValidMandatePattern(m.Pattern); err != nil {
		problems = append(problems, err.Error())
	}
	if m.MaxPerCall.Micros <= 0 || m.MaxTotal.Micros <= 0 {
		problems = append(problems, "max per call and max total must be above zero")
	}
	if m.MaxPerCall.Currency != m.MaxTotal.Currency {
		problems = append(problems, fmt.Sprintf("max per call is in %s and max total in %s; use one currency", m.MaxPerCall.Currency, m.MaxTotal.Currency))
	}
	if m.MaxPerCall.Micros > m.MaxTotal.Micros {
		problems = append(problems, fmt.Sprintf("max per call %s is above max total %s", m.MaxPerCall, m.MaxTotal))
	}
	if m.Count < 1 || m.Count > MaxMandateCount {
		problems = append(problems, fmt.Sprintf("count %d: use 1 to %d", m.Count, MaxMandateCount))
	}
	switch {
	case !m.ExpiresAt.After(now):
		problems = append(problems, "expiry must be in the future")
	case m.ExpiresAt.Sub(now) > MaxMandateLifetime:
		problems = append(problems, fmt.Sprintf("expiry %s is more than 7 days away", m.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	if strings.TrimSpace(m.CreatedBy) == "" {
		problems = append(problems, "the approver who creates it is required")
	}
	if len(problems) > 0 {
		return fmt.Errorf("mandate: %s", strings.Join(problems, "; "))
	}
	return nil
}

func newMandateID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "man_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// CreateMandate stores a new mandate, audited as mandate.created by its
// creator (an approver; whether they may is the caller's policy check).
func (db *DB) CreateMandate(ctx context.Context, m Mandate) (Mandate, error) {
	now := db.now()
	m.ID, m.Used, m.UsedMicros, m.CreatedAt, m.RevokedAt, m.RevokedBy = newMandateID(), 0, 0, now, nil, ""
	if err := m.validate(now); err != nil {
		return Mandate{}, err
	}
	err := db.st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO mandates (id, agent, action, pattern, currency, max_per_call_micros, max_total_micros,
			max_count, used_count, used_micros, created_by, created_at, expires_at, revoked_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, '')`,
			m.ID, m.Agent, m.Action, m.Pattern, m.MaxPerCall.Currency, m.MaxPerCall.Micros, m.MaxTotal.Micros,
			m.Count, m.CreatedBy, now.UnixNano(), m.ExpiresAt.UnixNano()); err != nil {
			return fmt.Errorf("insert mandate: %w", err)
		}
		return db.appendTx(ctx, tx, NewEvent(EventMandateCreated, m.CreatedBy, "", map[string]any{
			"mandate_id": m.ID, "agent": m.Agent, "action": m.Action, "resource": m.Pattern,
			"max_per_call": m.MaxPerCall.String(), "max_total": m.MaxTotal.String(), "count": m.Count,
			"expires_at": m.ExpiresAt.UTC().Format(time.RFC3339),
		}))
	})
	if err != nil {
		return Mandate{}, fmt.Errorf("create mandate: %w", err)
	}
	return m, nil
}

const mandateColumns = `id, agent, action, pattern, currency, max_per_call_micros, max_total_micros, max_count, used_count, used_micros,
	created_by, created_at, expires_at, revoked_at, revoked_by`

func scanMandate(row interface{ Scan(...any) error }) (Mandate, error) {
	var (
		m                    Mandate
		cur                  string
		perCall, total       int64
		createdAt, expiresAt int64
		revokedAt            sql.NullInt64
	)
	if err := row.Scan(&m.ID, &m.Agent, &m.Action, &m.Pattern, &cur, &perCall, &total, &m.Count, &m.Used, &m.UsedMicros,
		&m.CreatedBy, &createdAt, &expiresAt, &revokedAt, &m.RevokedBy); err != nil {
		return Mandate{}, err
	}
	m.MaxPerCall, m.MaxTotal = money.Money{Micros: perCall, Currency: cur}, money.Money{Micros: total, Currency: cur}
	m.CreatedAt, m.ExpiresAt = time.Unix(0, createdAt).UTC(), time.Unix(0, expiresAt).UTC()
	if revokedAt.Valid {
		t := time.Unix(0, revokedAt.Int64).UTC()
		m.RevokedAt = &t
	}
	return m, nil
}

// Mandates lists every mandate, newest first.
func (db *DB) Mandates(ctx context.Context) ([]Mandate, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT `+mandateColumns+` FROM mandates ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list mandates: %w", err)
	}
	defer rows.Close()
	var out []Mandate
	for rows.Next() {
		m, err := scanMandate(rows)
		if err != nil {
			return nil, fmt.Errorf("list mandates: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ErrMandateNotFound: no mandate with that id.
var ErrMandateNotFound = errors.New("mandate not found")

// RevokeMandate ends a mandate at once: no reservation after the commit uses it.
func (db *DB) RevokeMandate(ctx context.Context, id, by string) (Mandate, error) {
	var m Mandate
	err := db.st.Write(ctx, func(tx *store.Tx) error {
		var err error
		m, err = scanMandate(tx.QueryRowContext(ctx, `SELECT `+mandateColumns+` FROM mandates WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrMandateNotFound, quoteInput(id))
		}
		if err != nil {
			return err
		}
		if m.RevokedAt != nil {
			return nil
		}
		now := db.now()
		if _, err := tx.ExecContext(ctx, `UPDATE mandates SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL`, now.UnixNano(), by, id); err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		m.RevokedAt, m.RevokedBy = &now, by
		return db.appendTx(ctx, tx, NewEvent(EventMandateRevoked, by, "", map[string]any{"mandate_id": id, "used": m.Used, "count": m.Count}))
	})
	if err != nil {
		return Mandate{}, fmt.Errorf("revoke mandate: %w", err)
	}
	return m, nil
}

// pickMandate finds the mandate Reserve would use for a call of agent's
// action on resource for amount at now: the first active one, soonest to
// expire, whose pattern matches and whose per-call maximum and remaining
// total hold amount. nil when none would.
func pickMandate(ctx context.Context, q store.Queryer, now time.Time, agent, action, resource string, amount money.Money) (*Mandate, error) {
	ms, err := liveMandates(ctx, q, now, agent, action, amount.Currency)
	if err != nil {
		return nil, err
	}
	return chooseMandate(ms, now, resource, amount), nil
}

// liveMandates are agent's mandates for action in currency that may still
// cover a call at now, soonest to expire first.
func liveMandates(ctx context.Context, q store.Queryer, now time.Time, agent, action, currency string) ([]Mandate, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+mandateColumns+` FROM mandates
		WHERE agent = ? AND action = ? AND currency = ? AND revoked_at IS NULL AND expires_at > ? AND used_count < max_count
		ORDER BY expires_at, id`, agent, action, currency, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("find mandate: %w", err)
	}
	defer rows.Close()
	var out []Mandate
	for rows.Next() {
		m, err := scanMandate(rows)
		if err != nil {
			return nil, fmt.Errorf("find mandate: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find mandate: %w", err)
	}
	return out, nil
}

// chooseMandate is the first of ms (as liveMandates orders them) that covers
// a call on resource for amount at now, or nil.
func chooseMandate(ms []Mandate, now time.Time, resource string, amount money.Money) *Mandate {
	for _, m := range ms {
		if now.Before(m.ExpiresAt) && MatchesPattern(m.Pattern, resource) && amount.Micros <= m.MaxPerCall.Micros && m.UsedMicros+amount.Micros <= m.MaxTotal.Micros {
			return &m
		}
	}
	return nil
}

// MandateFor is the mandate a reservation now would use for a call of
// agent's action on resource (a domain, a script name) for amount, or nil:
// a read that consumes nothing (estimate_cost), served like the estimate's
// budget check from a snapshot that lasts until a write that could change
// it commits. Whether the policy lets a mandate cover the call is the
// caller's check, as for Reserve.
func (db *DB) MandateFor(ctx context.Context, agent, action, resource string, amount money.Money) (*Mandate, error) {
	now := db.now()
	key := mandateKey{agent: agent, action: action, currency: amount.Currency}
	ms, err := db.mandateSnapshots.get(ctx, db, key, now)
	if err != nil {
		return nil, err
	}
	return chooseMandate(ms, now, resource, amount), nil
}

// useMandate consumes the mandate pickMandate finds, inside the
// reservation's transaction. It returns the mandate id, or "".
func (db *DB) useMandate(ctx context.Context, tx *store.Tx, now time.Time, op Operation, action, resource string, amount money.Money) (string, error) {
	pick, err := pickMandate(ctx, tx, now, op.Agent, action, resource, amount)
	if err != nil {
		return "", err
	}
	if pick == nil {
		return "", nil
	}
	// The guard repeats the limits: the write transaction is serialised, so
	// this is belt and braces, never a second chance to overuse.
	res, err := tx.ExecContext(ctx, `UPDATE mandates SET used_count = used_count + 1, used_micros = used_micros + ?
		WHERE id = ? AND used_count < max_count AND used_micros + ? <= max_total_micros AND revoked_at IS NULL`, amount.Micros, pick.ID, amount.Micros)
	if err != nil {
		return "", fmt.Errorf("use mandate: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return "", nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO mandate_uses (operation_id, mandate_id, amount_micros, at) VALUES (?, ?, ?, ?)`,
		op.ID, pick.ID, amount.Micros, now.UnixNano()); err != nil {
		return "", fmt.Errorf("record mandate use: %w", err)
	}
	return pick.ID, db.appendTx(ctx, tx, NewEvent(EventMandateUsed, "mandate:"+pick.ID, op.ID, map[string]any{
		"mandate_id": pick.ID, "agent": op.Agent, "action": action, "resource": resource, "amount": amount.String(),
		"use": pick.Used + 1, "count": pick.Count, "created_by": pick.CreatedBy,
	}))
}

// returnMandateUse gives back the mandate use of an operation released
// without a charge, inside the release's transaction: the mandate's count
// and amount go down by what the reservation took, and the use is marked
// returned (so it is given back once). A settled operation keeps its use:
// Settle never calls this. Nothing happens for an operation no mandate
// covered.
func (db *DB) returnMandateUse(ctx context.Context, tx *store.Tx, now time.Time, cur Operation, to State, code, actor string) ([]Event, error) {
	var mandateID string
	var amount int64
	err := tx.QueryRowContext(ctx, `SELECT mandate_id, amount_micros FROM mandate_uses WHERE operation_id = ? AND returned_at IS NULL`, cur.ID).
		Scan(&mandateID, &amount)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read mandate use: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE mandate_uses SET returned_at = ? WHERE operation_id = ? AND returned_at IS NULL`, now.UnixNano(), cur.ID); err != nil {
		return nil, fmt.Errorf("return mandate use: %w", err)
	}
	var used int
	var usedMicros int64
	var currency string
	if err := tx.QueryRowContext(ctx, `UPDATE mandates SET used_count = used_count - 1, used_micros = used_micros - ?
		WHERE id = ? AND used_count >= 1 AND used_micros >= ? RETURNING used_count, used_micros, currency`, amount, mandateID, amount).
		Scan(&used, &usedMicros, &currency); err != nil {
		// The use was recorded with the mandate's count and amount in one
		// transaction, so a mandate that cannot give it back is corrupt.
		return nil, fmt.Errorf("return use of mandate %s: %w", mandateID, err)
	}
	return []Event{NewEvent(EventMandateUseReturned, actor, cur.ID, map[string]any{
		"mandate_id": mandateID, "amount": money.Money{Micros: amount, Currency: currency}.String(),
		"used": used, "used_amount": money.Money{Micros: usedMicros, Currency: currency}.String(),
		"to": to, "code": code, "why": "released without a charge: the use does not count",
	})}, nil
}

// MandateOf returns the mandate an operation's reservation used, or "".
func (db *DB) MandateOf(ctx context.Context, operationID string) (string, error) {
	var id string
	err := db.st.QueryRowContext(ctx, `SELECT mandate_id FROM mandate_uses WHERE operation_id = ?`, operationID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read mandate use of %s: %w", operationID, err)
	}
	return id, nil
}

// HasActiveMandate reports whether agent has a mandate for action that may
// still cover a call now: a cheap read that spares a policy call when none.
func (db *DB) HasActiveMandate(ctx context.Context, agent, action string) (bool, error) {
	var n int
	err := db.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM mandates WHERE agent = ? AND action = ? AND revoked_at IS NULL
		AND expires_at > ? AND used_count < max_count`, agent, action, db.now().UnixNano()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("read mandates: %w", err)
	}
	return n > 0, nil
}
