package approvals

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

const requestColumns = `id, operation_id, tool, agent, team, owner, client, summary, args_json, module_json,
	amount_micros, currency, amount_text, headroom_json, reason, policy, args_hash, irreversible, quorum,
	state, decided_reason, decided_at, consumed_at, created_at, expires_at, result_text, withdrawn`

type scanner interface{ Scan(dest ...any) error }

func scanRequest(row scanner) (Request, error) {
	var (
		r                       Request
		argsJSON, headroomJSON  string
		moduleJSON              sql.NullString
		irreversible, withdrawn int
		decidedAt, consumedAt   sql.NullInt64
		createdAt, expiresAt    int64
	)
	err := row.Scan(&r.ID, &r.OperationID, &r.Tool, &r.Agent, &r.Team, &r.Owner, &r.Client, &r.Summary,
		&argsJSON, &moduleJSON, &r.AmountMicros, &r.Currency, &r.AmountText, &headroomJSON, &r.Reason,
		&r.Policy, &r.ArgsHash, &irreversible, &r.Quorum, &r.State, &r.DecidedReason, &decidedAt,
		&consumedAt, &createdAt, &expiresAt, &r.ResultText, &withdrawn)
	if err != nil {
		return Request{}, err
	}
	r.Withdrawn = withdrawn != 0
	if err := json.Unmarshal([]byte(argsJSON), &r.Args); err != nil {
		return Request{}, fmt.Errorf("decode args of %s: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(headroomJSON), &r.Headroom); err != nil {
		return Request{}, fmt.Errorf("decode headroom of %s: %w", r.ID, err)
	}
	if moduleJSON.Valid {
		r.Module = &Module{}
		if err := json.Unmarshal([]byte(moduleJSON.String), r.Module); err != nil {
			return Request{}, fmt.Errorf("decode module of %s: %w", r.ID, err)
		}
	}
	r.Irreversible = irreversible != 0
	if decidedAt.Valid {
		r.DecidedAt = fromNanos(decidedAt.Int64)
	}
	if consumedAt.Valid {
		r.Consumed = true
		r.ConsumedAt = fromNanos(consumedAt.Int64)
	}
	r.CreatedAt = fromNanos(createdAt)
	r.ExpiresAt = fromNanos(expiresAt)
	return r, nil
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// loadRequest reads one request and its votes through q (the write handle, a
// transaction, or the read pool).
func (s *Service) loadRequest(ctx context.Context, q store.Queryer, id string) (Request, error) {
	r, err := scanRequest(q.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM approval_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	if err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	r.Votes, err = loadVotes(ctx, q, id)
	if err != nil {
		return Request{}, err
	}
	return r, nil
}

const voteColumns = `approver, channel_user, via, outcome, reason, at`

// scanVote reads one vote row, after the leading columns in lead.
func scanVote(row scanner, lead ...any) (Vote, error) {
	var v Vote
	var at int64
	if err := row.Scan(append(lead, &v.Approver, &v.User, &v.Via, &v.Outcome, &v.Reason, &at)...); err != nil {
		return Vote{}, fmt.Errorf("read votes: %w", err)
	}
	v.At = fromNanos(at)
	return v, nil
}

func loadVotes(ctx context.Context, q store.Queryer, id string) ([]Vote, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+voteColumns+` FROM approval_votes WHERE request_id = ? ORDER BY at, seq`, id)
	if err != nil {
		return nil, fmt.Errorf("read votes: %w", err)
	}
	defer rows.Close()
	var out []Vote
	for rows.Next() {
		v, err := scanVote(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read votes: %w", err)
	}
	return out, nil
}

func encodeRequestJSON(r Request) (args string, module sql.NullString, headroom string, err error) {
	fields := r.Args
	if fields == nil {
		fields = []Field{}
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return "", module, "", fmt.Errorf("encode args: %w", err)
	}
	args = string(b)
	hr := r.Headroom
	if hr == nil {
		hr = []string{}
	}
	if b, err = json.Marshal(hr); err != nil {
		return "", module, "", fmt.Errorf("encode headroom: %w", err)
	}
	headroom = string(b)
	if r.Module != nil {
		if b, err = json.Marshal(r.Module); err != nil {
			return "", module, "", fmt.Errorf("encode module: %w", err)
		}
		module = sql.NullString{String: string(b), Valid: true}
	}
	return args, module, headroom, nil
}

// touch records a change to request id that its posts must show: the
// request's version (a change counter) and every post's.
func touch(ctx context.Context, tx *store.Tx, id string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE approval_requests SET version = version + 1 WHERE id = ?`, id); err != nil {
		return fmt.Errorf("record change of %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE approval_posts SET version = version + 1 WHERE request_id = ?`, id); err != nil {
		return fmt.Errorf("record change of %s: %w", id, err)
	}
	return nil
}
