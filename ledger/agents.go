package ledger

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// Agent is an identity that calls tools over the HTTP transports.
type Agent struct {
	Name       string            `json:"name"`
	Team       string            `json:"team"`
	Owner      string            `json:"owner,omitempty"` // the human responsible; never approves the agent's own requests
	Roles      []string          `json:"roles"`
	Attributes map[string]string `json:"attributes,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
}

// AgentToken describes a bearer token; the secret itself is never stored.
type AgentToken struct {
	ID           string     `json:"id"`
	Agent        string     `json:"agent"`
	Prefix       string     `json:"prefix"` // the first characters, to recognise a token in a list
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	OverlapUntil *time.Time `json:"overlap_until,omitempty"` // set when rotated out: valid until then
}

// AgentInfo is an agent and all its tokens, newest first.
type AgentInfo struct {
	Agent  Agent        `json:"agent"`
	Tokens []AgentToken `json:"tokens"`
}

// Authentication errors. None of them ever carries the token.
var (
	ErrTokenMalformed = errors.New("malformed agent token")
	ErrTokenUnknown   = errors.New("unknown agent token")
	ErrTokenExpired   = errors.New("agent token expired")
	ErrTokenRevoked   = errors.New("agent token revoked")
	// ErrExists is returned when creating something that already exists.
	ErrExists = errors.New("already exists")
)

const (
	tokenPrefix    = "tg_"
	tokenBodyLen   = 43 // base64url of 32 bytes, no padding
	tokenLen       = len(tokenPrefix) + tokenBodyLen
	tokenLookupLen = len(tokenPrefix) + 8
)

// newToken returns "tg_" + base64url(32 crypto-random bytes).
func newToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the runtime guarantees it does not
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// parseToken checks a presented bearer token's shape (untrusted input) and returns
// its SHA-256. Errors never include the token.
func parseToken(token string) ([32]byte, error) {
	if len(token) != tokenLen || !strings.HasPrefix(token, tokenPrefix) {
		return [32]byte{}, fmt.Errorf("%w: expected %q followed by %d base64url characters", ErrTokenMalformed, tokenPrefix, tokenBodyLen)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token[len(tokenPrefix):])
	if err != nil || len(raw) != 32 {
		return [32]byte{}, fmt.Errorf("%w: expected %q followed by %d base64url characters", ErrTokenMalformed, tokenPrefix, tokenBodyLen)
	}
	return sha256.Sum256([]byte(token)), nil
}

func (a *Agent) validate() error {
	var problems []string
	if err := checkName("agent", a.Name); err != nil {
		problems = append(problems, err.Error())
	}
	if err := checkName("team", a.Team); err != nil {
		problems = append(problems, err.Error())
	}
	if len(a.Owner) > 200 {
		problems = append(problems, "owner must be at most 200 characters")
	}
	for _, r := range a.Roles {
		if err := checkName("role", r); err != nil {
			problems = append(problems, err.Error())
		}
	}
	for k, v := range a.Attributes {
		if k == "" || len(k) > 64 || len(v) > 1024 {
			problems = append(problems, fmt.Sprintf("attribute %s must have a 1-64 character key and a value of at most 1024 characters", quoteInput(k)))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// CreateAgent registers an agent and returns its first bearer token, valid for ttl.
// The token is shown only here: only its SHA-256 is stored, and the "agent.created"
// audit event names the token id, never the token.
func (db *DB) CreateAgent(ctx context.Context, a Agent, ttl time.Duration, actor string) (string, error) {
	if err := a.validate(); err != nil {
		return "", fmt.Errorf("create agent: %w", err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("create agent %s: ttl %s must be positive, e.g. 24h", a.Name, ttl)
	}
	actor = checkActor(actor)
	roles := a.Roles
	if roles == nil {
		roles = []string{}
	}
	attrs := a.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	rolesJSON, _ := json.Marshal(roles) // strings only: cannot fail
	attrsJSON, _ := json.Marshal(attrs)
	token := newToken()
	err := db.write(ctx, func(tx *store.Tx) error {
		now := db.now()
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE name = ?`, a.Name).Scan(&n); err != nil {
			return fmt.Errorf("read agent: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("agent %s: %w; use rotate to issue it a new token", a.Name, ErrExists)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents (name, team, owner, roles, attributes, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			a.Name, a.Team, a.Owner, string(rolesJSON), string(attrsJSON), now.UnixNano(), actor); err != nil {
			return fmt.Errorf("insert agent: %w", err)
		}
		tokID, expires, err := insertToken(ctx, tx, a.Name, token, now, ttl)
		if err != nil {
			return err
		}
		return db.appendTx(ctx, tx, NewEvent(EventAgentCreated, actor, "", map[string]any{
			"agent": a.Name, "team": a.Team, "owner": a.Owner, "roles": roles, "attributes": attrs,
			"token_id": tokID, "expires_at": expires,
		}))
	})
	if err != nil {
		return "", fmt.Errorf("create agent: %w", err)
	}
	return token, nil
}

func insertToken(ctx context.Context, tx *store.Tx, agent, token string, now time.Time, ttl time.Duration) (string, time.Time, error) {
	sum := sha256.Sum256([]byte(token))
	id := newID("tok_", 16)
	expires := now.Add(ttl)
	if _, err := tx.ExecContext(ctx, `INSERT INTO agent_tokens (id, agent, prefix, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		id, agent, token[:tokenLookupLen], sum[:], now.UnixNano(), expires.UnixNano()); err != nil {
		return "", time.Time{}, fmt.Errorf("insert token: %w", err)
	}
	return id, expires, nil
}

// RotateAgentToken issues a new token valid for ttl. The agent's other live tokens
// stay valid until now+overlap, never beyond their own expiry, so clients can
// switch without downtime. Audited as "agent.token_rotated" (ids, never tokens).
func (db *DB) RotateAgentToken(ctx context.Context, name string, ttl, overlap time.Duration, actor string) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("rotate token of %s: ttl %s must be positive", name, ttl)
	}
	if overlap < 0 {
		return "", fmt.Errorf("rotate token of %s: overlap %s must not be negative", name, overlap)
	}
	actor = checkActor(actor)
	token := newToken()
	err := db.write(ctx, func(tx *store.Tx) error {
		now := db.now()
		if err := agentExists(ctx, tx, name); err != nil {
			return err
		}
		until := now.Add(overlap).UnixNano()
		least := "MIN" // SQLite's scalar MIN of several arguments
		if tx.Dialect() == store.Postgres {
			least = "LEAST"
		}
		res, err := tx.ExecContext(ctx, `UPDATE agent_tokens SET overlap_until = `+least+`(?, expires_at, COALESCE(overlap_until, ?))
			WHERE agent = ? AND revoked_at IS NULL AND expires_at > ? AND (overlap_until IS NULL OR overlap_until > ?)`,
			until, until, name, now.UnixNano(), now.UnixNano())
		if err != nil {
			return fmt.Errorf("overlap old tokens: %w", err)
		}
		rotated, _ := res.RowsAffected()
		tokID, expires, err := insertToken(ctx, tx, name, token, now, ttl)
		if err != nil {
			return err
		}
		return db.appendTx(ctx, tx, NewEvent(EventAgentRotated, actor, "", map[string]any{
			"agent": name, "token_id": tokID, "expires_at": expires, "old_tokens": rotated, "old_valid_until": time.Unix(0, until).UTC(),
		}))
	})
	if err != nil {
		return "", fmt.Errorf("rotate token of %s: %w", name, err)
	}
	return token, nil
}

func agentExists(ctx context.Context, q store.Queryer, name string) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE name = ?`, name).Scan(&n); err != nil {
		return fmt.Errorf("read agent: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("agent %s: %w", quoteInput(name), ErrNotFound)
	}
	return nil
}

// RevokeAgent revokes every token of the agent now. Audited as "agent.revoked".
func (db *DB) RevokeAgent(ctx context.Context, name, actor string) error {
	actor = checkActor(actor)
	err := db.write(ctx, func(tx *store.Tx) error {
		if err := agentExists(ctx, tx, name); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE agent_tokens SET revoked_at = ? WHERE agent = ? AND revoked_at IS NULL`, db.now().UnixNano(), name)
		if err != nil {
			return fmt.Errorf("revoke tokens: %w", err)
		}
		n, _ := res.RowsAffected()
		return db.appendTx(ctx, tx, NewEvent(EventAgentRevoked, actor, "", map[string]any{"agent": name, "tokens_revoked": n}))
	})
	if err != nil {
		return fmt.Errorf("revoke agent: %w", err)
	}
	return nil
}

func scanAgent(row interface{ Scan(...any) error }) (Agent, error) {
	var (
		a            Agent
		roles, attrs string
		at           int64
	)
	if err := row.Scan(&a.Name, &a.Team, &a.Owner, &roles, &attrs, &at); err != nil {
		return Agent{}, err
	}
	if err := json.Unmarshal([]byte(roles), &a.Roles); err != nil {
		return Agent{}, fmt.Errorf("roles of %s: %w", a.Name, err)
	}
	if err := json.Unmarshal([]byte(attrs), &a.Attributes); err != nil {
		return Agent{}, fmt.Errorf("attributes of %s: %w", a.Name, err)
	}
	a.CreatedAt = time.Unix(0, at).UTC()
	return a, nil
}

// Agent reads one agent. ErrNotFound if there is none.
func (db *DB) Agent(ctx context.Context, name string) (Agent, error) {
	a, err := scanAgent(db.st.QueryRowContext(ctx, `SELECT name, team, owner, roles, attributes, created_at FROM agents WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("agent %s: %w", quoteInput(name), ErrNotFound)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("read agent %s: %w", name, err)
	}
	return a, nil
}

// Agents lists every agent with its tokens.
func (db *DB) Agents(ctx context.Context) ([]AgentInfo, error) {
	var out []AgentInfo
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name, team, owner, roles, attributes, created_at FROM agents ORDER BY name`)
		if err != nil {
			return err
		}
		index := map[string]int{}
		for rows.Next() {
			a, err := scanAgent(rows)
			if err != nil {
				rows.Close()
				return err
			}
			index[a.Name] = len(out)
			out = append(out, AgentInfo{Agent: a, Tokens: []AgentToken{}})
		}
		if err := rows.Close(); err != nil {
			return err
		}
		trows, err := tx.QueryContext(ctx, `SELECT id, agent, prefix, created_at, expires_at, revoked_at, overlap_until FROM agent_tokens ORDER BY created_at DESC, id`)
		if err != nil {
			return err
		}
		defer trows.Close()
		for trows.Next() {
			var (
				t                 AgentToken
				created, expires  int64
				revoked, overlapU sql.NullInt64
			)
			if err := trows.Scan(&t.ID, &t.Agent, &t.Prefix, &created, &expires, &revoked, &overlapU); err != nil {
				return err
			}
			t.CreatedAt = time.Unix(0, created).UTC()
			t.ExpiresAt = time.Unix(0, expires).UTC()
			t.RevokedAt = nullTime(revoked)
			t.OverlapUntil = nullTime(overlapU)
			if i, ok := index[t.Agent]; ok {
				out[i].Tokens = append(out[i].Tokens, t)
			}
		}
		return trows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

func nullTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := time.Unix(0, n.Int64).UTC()
	return &t
}

// Authenticate resolves a bearer token to its agent. Candidates are found by the
// token's non-secret prefix and matched by a constant-time comparison of SHA-256
// hashes, so response time does not reveal how much of a guess was right.
// Malformed, unknown, expired (including rotated out after the overlap) and
// revoked tokens get ErrTokenMalformed, ErrTokenUnknown, ErrTokenExpired and
// ErrTokenRevoked.
func (db *DB) Authenticate(ctx context.Context, token string) (Agent, error) {
	sum, err := parseToken(token)
	if err != nil {
		return Agent{}, fmt.Errorf("authenticate: %w", err)
	}
	rows, err := db.st.QueryContext(ctx, `SELECT agent, hash, expires_at, revoked_at, overlap_until FROM agent_tokens WHERE prefix = ?`, token[:tokenLookupLen])
	if err != nil {
		return Agent{}, fmt.Errorf("authenticate: %w", err)
	}
	type candidate struct {
		agent             string
		hash              []byte
		expires           int64
		revoked, overlapU sql.NullInt64
	}
	var match *candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.agent, &c.hash, &c.expires, &c.revoked, &c.overlapU); err != nil {
			rows.Close()
			return Agent{}, fmt.Errorf("authenticate: %w", err)
		}
		if subtle.ConstantTimeCompare(c.hash, sum[:]) == 1 {
			match = &c
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return Agent{}, fmt.Errorf("authenticate: %w", err)
	}
	if match == nil {
		return Agent{}, fmt.Errorf("authenticate: %w", ErrTokenUnknown)
	}
	now := db.now().UnixNano()
	switch {
	case match.revoked.Valid && match.revoked.Int64 <= now:
		return Agent{}, fmt.Errorf("authenticate: %w at %s", ErrTokenRevoked, time.Unix(0, match.revoked.Int64).UTC().Format(time.RFC3339))
	case match.overlapU.Valid && match.overlapU.Int64 <= now:
		return Agent{}, fmt.Errorf("authenticate: %w: rotated out, its overlap ended at %s", ErrTokenExpired, time.Unix(0, match.overlapU.Int64).UTC().Format(time.RFC3339))
	case match.expires <= now:
		return Agent{}, fmt.Errorf("authenticate: %w at %s", ErrTokenExpired, time.Unix(0, match.expires).UTC().Format(time.RFC3339))
	}
	a, err := db.Agent(ctx, match.agent)
	if err != nil {
		return Agent{}, fmt.Errorf("authenticate: %w", err)
	}
	return a, nil
}
