package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// DaySpend is what succeeded operations were charged on one UTC day, in one
// currency.
type DaySpend struct {
	Day        time.Time
	Amount     money.Money
	Operations int
}

const nanosPerDay = int64(24 * time.Hour)

// DailySpend returns the charges of operations that succeeded since since,
// per UTC day and currency, oldest first (days without charges are left out).
func (db *DB) DailySpend(ctx context.Context, since time.Time) ([]DaySpend, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT updated_at / ?1, currency, SUM(charged_micros), COUNT(*) FROM operations
		WHERE state = 'succeeded' AND updated_at >= ?2 AND charged_micros IS NOT NULL
		GROUP BY updated_at / ?1, currency ORDER BY 1, 2`, nanosPerDay, since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("daily spend: %w", err)
	}
	defer rows.Close()
	var out []DaySpend
	for rows.Next() {
		var (
			day, micros int64
			d           DaySpend
		)
		if err := rows.Scan(&day, &d.Amount.Currency, &micros, &d.Operations); err != nil {
			return nil, fmt.Errorf("daily spend: %w", err)
		}
		d.Day = time.Unix(0, day*nanosPerDay).UTC()
		d.Amount.Micros = micros
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("daily spend: %w", err)
	}
	return out, nil
}

// Succeeded returns the newest operations of tool on resource that
// succeeded, at most limit: what ran last ("worker_script:web-app").
func (db *DB) Succeeded(ctx context.Context, tool, resource string, limit int) ([]Operation, error) {
	rows, err := db.st.QueryContext(ctx, `SELECT `+opColumns+` FROM operations WHERE state = 'succeeded' AND tool = ? AND resource = ?
		ORDER BY seq DESC LIMIT ?`, tool, resource, limit)
	if err != nil {
		return nil, fmt.Errorf("succeeded operations: %w", err)
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("succeeded operations: %w", err)
		}
		out = append(out, op)
	}
	return out, rows.Err()
}

// AuditSeq is the sequence number of the newest audit event (0 when there is
// none): every change tollgate makes appends one, so a change of this number
// says that something changed, in any process on the database.
func (db *DB) AuditSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := db.st.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("audit head: %w", err)
	}
	return seq, nil
}
