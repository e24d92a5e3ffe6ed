package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

// ReserveRequest asks for room in every applicable budget and velocity limit.
type ReserveRequest struct {
	OperationID string // empty only for CheckBudget
	// Agent and Team name the applicable scopes: agent:<Agent>, team:<Team>, global.
	// For Reserve they default to the operation's and must match it when given.
	Agent, Team string
	Action      string      // the velocity-limited action (tollgate: the tool name)
	Amount      money.Money // the full quoted maximum (includes Commitment.Amount if any)
	Commitment  *Commitment // a once-per-key part of Amount
	// MandateResource, when set (the resource's name: a domain, a script),
	// lets Reserve consume a matching mandate of the agent for Action in the
	// same transaction (MandateOf tells which); empty uses none.
	MandateResource string
	// Authorize, when set, first moves the operation to authorized (from
	// Authorize.Opts.From, planned by default) in the same transaction:
	// the policy's allow and the hold commit together.
	Authorize *Step
	// Then are moves made after the hold in the same transaction, unless
	// the reservation is blocked: reserved → approved → executing for a call
	// no human has to approve, committed once before anything reaches
	// Cloudflare.
	Then []Step
}

// Step is one state move made inside a Reserve transaction, with the events
// that describe it.
type Step struct {
	To     State
	Opts   TransitionOpts
	Events []Event
}

// Block kinds.
const (
	BlockBudget   = "budget"
	BlockVelocity = "velocity"
	BlockFrozen   = "frozen"
	BlockCurrency = "currency"
)

// BlockedError is a refused reservation: which rule, and the figures behind it.
type BlockedError struct {
	Kind   string `json:"kind"` // "budget" | "velocity" | "frozen" | "currency"
	Scope  Scope  `json:"scope"`
	Window Window `json:"window,omitempty"`
	Action string `json:"action,omitempty"` // velocity kind
	// Budget and currency kinds.
	Limit     money.Money `json:"limit"`
	Spent     money.Money `json:"spent"`
	Held      money.Money `json:"held"`
	Requested money.Money `json:"requested"`
	// Velocity kind.
	Max   int `json:"max,omitempty"`
	Count int `json:"count,omitempty"`

	ResetsAt  *time.Time `json:"resets_at,omitempty"`
	Freeze    *Freeze    `json:"freeze,omitempty"` // frozen kind
	AutoFroze bool       `json:"auto_froze"`       // this block tripped the auto-freeze
}

// Code is the operation error code for the block: budget_exceeded,
// velocity_exceeded, frozen or currency_mismatch.
func (e *BlockedError) Code() string {
	switch e.Kind {
	case BlockBudget:
		return "budget_exceeded"
	case BlockVelocity:
		return "velocity_exceeded"
	case BlockFrozen:
		return "frozen"
	}
	return "currency_mismatch"
}

// Error is one human sentence naming the rule, its figures, the request and the reset.
func (e *BlockedError) Error() string {
	var s string
	switch e.Kind {
	case BlockBudget:
		s = fmt.Sprintf("budget %s (%s) is %s with %s spent and %s held; %s does not fit (%s)",
			e.Scope, e.Window, e.Limit, e.Spent, e.Held, e.Requested, resetText(e.ResetsAt))
	case BlockVelocity:
		s = fmt.Sprintf("velocity limit %s allows %d %s per %s and %d are already reserved or done (%s)",
			e.Scope, e.Max, e.Action, e.Window, e.Count, resetText(e.ResetsAt))
	case BlockFrozen:
		if e.Freeze != nil {
			s = fmt.Sprintf("spending for %s is frozen since %s by %s (%s); a human must unfreeze it",
				e.Freeze.Scope, e.Freeze.At.Format(time.RFC3339), e.Freeze.By, e.Freeze.Reason)
		} else {
			s = fmt.Sprintf("spending for %s is frozen; a human must unfreeze it", e.Scope)
		}
	default:
		s = fmt.Sprintf("budget %s (%s) is in %s but the request is %s; budgets and quotes must use the same currency",
			e.Scope, e.Window, e.Limit.Currency, e.Requested)
	}
	if e.AutoFroze {
		s += "; this agent was blocked too often, so its spending is now frozen until a human unfreezes it"
	}
	return s
}

func resetText(t *time.Time) string {
	if t == nil {
		return "a total budget never resets"
	}
	return "resets " + t.UTC().Format(time.RFC3339)
}

// evaluation is the verdict of the spend rules for one request.
type evaluation struct {
	statuses []BudgetStatus
	block    *BlockedError
	// hold is what the request holds: Amount less a commitment some operation has
	// already recorded (it will not be charged again).
	hold               money.Money
	commitmentRecorded bool
}

// evaluate applies the rules in order — freeze, currency, budgets, velocity — and
// reports the first block. Every query is one index probe per budget or limit.
func evaluate(ctx context.Context, q store.Queryer, now time.Time, agent, team, action string, amount money.Money, c *Commitment) (evaluation, error) {
	key := ""
	if c != nil {
		key = c.Key
	}
	in, err := readSpendState(ctx, q, now, agent, team, action, key, c != nil)
	if err != nil {
		return evaluation{hold: amount}, err
	}
	return in.evaluate(action, amount, c), nil
}

// spendState is everything the spend rules read for one agent, team, action
// and commitment key: a snapshot that evaluate turns into a verdict for any
// amount.
type spendState struct {
	statuses           []BudgetStatus
	freeze             *Freeze
	limits             []LimitStatus
	commitmentRecorded bool
}

// readSpendState reads the spend state the rules need. Velocity limits are
// read whenever action is set, even for a frozen agent, so one snapshot
// serves every verdict.
func readSpendState(ctx context.Context, q store.Queryer, now time.Time, agent, team, action, commitmentKey string, commitment bool) (spendState, error) {
	var in spendState
	scopes := applicableScopes(agent, team)
	if commitment {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM commitments WHERE key = ?`, commitmentKey).Scan(&n); err != nil {
			return in, fmt.Errorf("read commitment: %w", err)
		}
		in.commitmentRecorded = n > 0
	}
	var err error
	if in.statuses, err = budgetStatuses(ctx, q, now, scopes); err != nil {
		return in, fmt.Errorf("read budgets: %w", err)
	}
	if in.freeze, err = frozenFor(ctx, q, agent, team); err != nil {
		return in, fmt.Errorf("read freezes: %w", err)
	}
	if action != "" {
		if in.limits, err = limitStatuses(ctx, q, now, action, scopes); err != nil {
			return in, fmt.Errorf("read velocity limits: %w", err)
		}
	}
	return in, nil
}

// evaluate applies the rules to the snapshot for amount (and c, whose key
// the snapshot was read for).
func (in spendState) evaluate(action string, amount money.Money, c *Commitment) evaluation {
	ev := evaluation{hold: amount, statuses: in.statuses}
	if c != nil && in.commitmentRecorded {
		ev.commitmentRecorded = true
		ev.hold.Micros -= c.Amount.Micros // validated: 0 <= c.Amount <= amount
	}
	if f := in.freeze; f != nil {
		ev.block = &BlockedError{Kind: BlockFrozen, Scope: f.Scope, Freeze: f, Requested: amount}
		return ev
	}
	for _, st := range in.statuses {
		if st.Budget.Limit.Currency != amount.Currency {
			ev.block = &BlockedError{Kind: BlockCurrency, Scope: st.Budget.Scope, Window: st.Budget.Window,
				Limit: st.Budget.Limit, Spent: st.Spent, Held: st.Held, Requested: amount, ResetsAt: st.ResetsAt}
			return ev
		}
	}
	for _, st := range in.statuses {
		if !fits(st.Budget.Limit.Micros, st.Spent.Micros, st.Held.Micros, ev.hold.Micros) {
			ev.block = &BlockedError{Kind: BlockBudget, Scope: st.Budget.Scope, Window: st.Budget.Window,
				Limit: st.Budget.Limit, Spent: st.Spent, Held: st.Held, Requested: ev.hold, ResetsAt: st.ResetsAt}
			return ev
		}
	}
	if action != "" {
		for _, l := range in.limits {
			if l.Count >= l.Limit.Max {
				reset := l.ResetsAt
				ev.block = &BlockedError{Kind: BlockVelocity, Scope: l.Limit.Scope, Window: l.Limit.Window, Action: action,
					Max: l.Limit.Max, Count: l.Count, ResetsAt: &reset, Requested: amount}
				return ev
			}
		}
	}
	return ev
}

// fits reports spent + held + amount <= limit without overflowing.
func fits(limit, spent, held, amount int64) bool {
	room := limit - spent // both non-negative
	if room < 0 || held > room {
		return false
	}
	return amount <= room-held
}

func (r *ReserveRequest) validate(needOp bool) error {
	var problems []string
	if needOp {
		if err := checkOperationID(r.OperationID); err != nil {
			problems = append(problems, err.Error())
		}
	} else if r.OperationID == "" {
		if err := checkName("agent", r.Agent); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if r.Team != "" {
		if err := checkName("team", r.Team); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if r.Action != "" && !actionRE.MatchString(r.Action) {
		problems = append(problems, fmt.Sprintf("action %s must be a lower-case identifier such as buy_thing", quoteInput(r.Action)))
	}
	if err := money.CheckAmount("amount", r.Amount); err != nil {
		problems = append(problems, err.Error())
	}
	if c := r.Commitment; c != nil {
		switch {
		case c.Key == "" || len(c.Key) > 200:
			problems = append(problems, "commitment key must be 1-200 characters, e.g. workers-paid-plan:2026-11")
		case money.CheckAmount("commitment amount", c.Amount) != nil:
			problems = append(problems, money.CheckAmount("commitment amount", c.Amount).Error())
		case c.Amount.Currency != r.Amount.Currency || c.Amount.Micros > r.Amount.Micros:
			problems = append(problems, fmt.Sprintf("commitment %s must be part of the amount %s (same currency, not larger)", c.Amount, r.Amount))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Reserve places the holds for an authorized operation in one BEGIN IMMEDIATE
// transaction. A frozen agent, team or global scope blocks; every applicable budget
// (all windows) must have room for Amount (spent + held + amount <= limit) and every
// velocity limit for Action must have count < max; a budget in another currency
// blocks.
//
// On success the operation is reserved with Quote = Amount, its holds and the
// running totals are written, and "budget.reserved" is appended. On a block the
// operation moves to denied (code budget_exceeded, velocity_exceeded, frozen or
// currency_mismatch), a flagged "budget.blocked" event and the block are recorded,
// the agent is auto-frozen if it has now been blocked often enough, and Reserve
// returns the denied operation with a *BlockedError. events are appended either way.
//
// A commitment already recorded by an earlier settled operation is not held again:
// the holds are Amount less its amount (Quote stays Amount).
func (db *DB) Reserve(ctx context.Context, r ReserveRequest, events ...Event) (Operation, error) {
	if err := r.validate(true); err != nil {
		return Operation{}, fmt.Errorf("reserve budget: %w", err)
	}
	var (
		op      Operation
		blocked *BlockedError
	)
	err := db.write(ctx, func(tx *store.Tx) error {
		now := db.now()
		cur, err := operationHead(ctx, tx, r.OperationID)
		if err != nil {
			return err
		}
		if (r.Agent != "" && r.Agent != cur.Agent) || (r.Team != "" && r.Team != cur.Team) {
			return fmt.Errorf("request is for agent %s team %s but operation %s belongs to agent %s team %s",
				quoteInput(r.Agent), quoteInput(r.Team), cur.ID, cur.Agent, cur.Team)
		}
		if a := r.Authorize; a != nil {
			from := a.Opts.From
			if len(from) == 0 {
				from = []State{StatePlanned}
			}
			if err := checkMove(cur, StateAuthorized, from); err != nil {
				return err
			}
			if cur, err = db.applyTransition(ctx, tx, cur, StateAuthorized, a.Opts, a.Events); err != nil {
				return err
			}
		}
		if err := checkMove(cur, StateReserved, []State{StateAuthorized}); err != nil {
			return err
		}
		ev, err := evaluate(ctx, tx, now, cur.Agent, cur.Team, r.Action, r.Amount, r.Commitment)
		if err != nil {
			return err
		}
		actor := "agent:" + cur.Agent
		if ev.block != nil {
			blocked = ev.block
			op, err = db.recordBlock(ctx, tx, now, cur, r, blocked, events)
			return err
		}

		// Three set-based statements whatever the number of scopes: one hold per
		// scope and window, then the running totals and velocity counts from them.
		day, _ := period(WindowDay, now)
		month, _ := period(WindowMonth, now)
		var team any
		if cur.Team != "" {
			team = string(TeamScope(cur.Team))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO holds (operation_id, scope, win, period, currency, action, amount_micros, created_at)
			SELECT ?1, s.scope, w.win, w.period, ?2, ?3, ?4, ?5
			FROM (SELECT ?6 AS scope UNION ALL SELECT ?7 UNION ALL SELECT 'global') AS s,
			     (SELECT 'day' AS win, ?8 AS period UNION ALL SELECT 'month', ?9 UNION ALL SELECT 'total', 'total') AS w
			WHERE s.scope IS NOT NULL`,
			cur.ID, ev.hold.Currency, r.Action, ev.hold.Micros, now.UnixNano(), string(AgentScope(cur.Agent)), team, day, month); err != nil {
			return fmt.Errorf("insert holds: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO spend_totals (scope, win, period, currency, held_micros)
			SELECT scope, win, period, currency, amount_micros FROM holds WHERE operation_id = ?
			ON CONFLICT (scope, win, period, currency) DO UPDATE SET held_micros = spend_totals.held_micros + excluded.held_micros`, cur.ID); err != nil {
			return fmt.Errorf("update held totals: %w", err)
		}
		if r.Action != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO velocity_totals (scope, action, win, period, count)
				SELECT scope, action, win, period, 1 FROM holds WHERE operation_id = ? AND win <> 'total'
				ON CONFLICT (scope, action, win, period) DO UPDATE SET count = velocity_totals.count + 1`, cur.ID); err != nil {
				return fmt.Errorf("update velocity counts: %w", err)
			}
		}
		quote := &quoteUpdate{amount: r.Amount}
		if r.Commitment != nil {
			quote.commitmentKey, quote.commitmentMicros = r.Commitment.Key, r.Commitment.Amount.Micros
		}
		data := reservedData{
			Amount: r.Amount, AmountText: r.Amount.String(), Held: ev.hold, Action: r.Action,
			Scopes: applicableScopes(cur.Agent, cur.Team), Budgets: statusData(ev.statuses, ev.hold),
		}
		if r.MandateResource != "" {
			if data.MandateID, err = db.useMandate(ctx, tx, now, cur, r.Action, r.MandateResource, r.Amount); err != nil {
				return err
			}
		}
		if r.Commitment != nil {
			data.Commitment, data.CommitmentAlreadyRecorded = r.Commitment, &ev.commitmentRecorded
		}
		all := append([]Event{NewEvent(EventBudgetReserved, actor, cur.ID, data)}, events...)
		if op, err = db.applyTransition(ctx, tx, cur, StateReserved, TransitionOpts{Actor: actor, quote: quote}, all); err != nil {
			return err
		}
		for _, st := range r.Then {
			if st.To.Terminal() || st.To == StateReserved {
				return &StateConflictError{OperationID: cur.ID, Actual: op.State, To: st.To, Reason: "a step after a reservation moves it on, never to a terminal state (use Settle or Release)"}
			}
			if err := checkMove(op, st.To, st.Opts.From); err != nil {
				return err
			}
			if op, err = db.applyTransition(ctx, tx, op, st.To, st.Opts, st.Events); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Operation{}, fmt.Errorf("reserve budget: %w", err)
	}
	if blocked != nil {
		return op, blocked
	}
	return op, nil
}

// reservedData is the data of a budget.reserved event. Its fields are in
// the order of their names, as a map's keys are marshalled: the event reads
// as it did when it was built as a map, and costs a reservation less.
type reservedData struct {
	Action                    string           `json:"action"`
	Amount                    money.Money      `json:"amount"`
	AmountText                string           `json:"amount_text"`
	Budgets                   []budgetHeadroom `json:"budgets"`
	Commitment                *Commitment      `json:"commitment,omitempty"`
	CommitmentAlreadyRecorded *bool            `json:"commitment_already_recorded,omitempty"`
	Held                      money.Money      `json:"held"`
	MandateID                 string           `json:"mandate_id,omitempty"`
	Scopes                    []Scope          `json:"scopes"`
}

// budgetHeadroom is one budget in an audit event: the headroom after the
// hold. Fields in name order, as reservedData's.
type budgetHeadroom struct {
	HeldBefore     money.Money `json:"held_before"`
	Limit          money.Money `json:"limit"`
	Period         string      `json:"period"`
	RemainingAfter int64       `json:"remaining_after"`
	Scope          Scope       `json:"scope"`
	Spent          money.Money `json:"spent"`
	Window         Window      `json:"window"`
}

// statusData summarises budgets for an audit event: the headroom after the hold.
func statusData(st []BudgetStatus, hold money.Money) []budgetHeadroom {
	out := make([]budgetHeadroom, 0, len(st))
	for _, s := range st {
		out = append(out, budgetHeadroom{
			Scope: s.Budget.Scope, Window: s.Budget.Window, Period: s.Period, Limit: s.Budget.Limit,
			Spent: s.Spent, HeldBefore: s.Held, RemainingAfter: remaining(s.Budget.Limit.Micros, s.Spent.Micros, s.Held.Micros+hold.Micros),
		})
	}
	return out
}

// recordBlock denies the operation, records and flags the block, and auto-freezes
// the agent when it has been blocked blocks times within the window. Blocks caused
// by an existing freeze do not count: spending is already stopped.
func (db *DB) recordBlock(ctx context.Context, tx *store.Tx, now time.Time, cur Operation, r ReserveRequest, b *BlockedError, events []Event) (Operation, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO blocks (agent, at, kind, operation_id, scope, win) VALUES (?, ?, ?, ?, ?, ?)`,
		cur.Agent, now.UnixNano(), b.Kind, cur.ID, b.Scope, b.Window); err != nil {
		return Operation{}, fmt.Errorf("record block: %w", err)
	}
	var extra []Event
	if b.Kind != BlockFrozen && db.freezeBlocks > 0 {
		// Blocks from before the agent's last unfreeze were seen by the human
		// who lifted it: only later ones count towards freezing it again.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM blocks WHERE agent = ?1 AND at > ?2 AND kind <> ?3
			AND at > COALESCE((SELECT at FROM freeze_clears WHERE scope = ?4), 0)`,
			cur.Agent, now.Add(-db.freezeWithin).UnixNano(), BlockFrozen, AgentScope(cur.Agent)).Scan(&n); err != nil {
			return Operation{}, fmt.Errorf("count blocks: %w", err)
		}
		if n >= db.freezeBlocks {
			f, created, err := db.freezeTx(ctx, tx, Freeze{
				Scope:  AgentScope(cur.Agent),
				Reason: fmt.Sprintf("auto-freeze: %d spending calls blocked within %s", n, db.freezeWithin),
				By:     ActorSystem, At: now, Auto: true,
			}, cur.ID)
			if err != nil {
				return Operation{}, err
			}
			if created {
				b.AutoFroze = true
				db.log.WarnContext(ctx, "agent auto-frozen", slog.String("agent", cur.Agent), slog.Int("blocks", n),
					slog.Duration("within", db.freezeWithin), slog.String("operation_id", cur.ID), slog.Time("at", f.At))
			}
		}
	}
	actor := "agent:" + cur.Agent
	blockData, err := json.Marshal(b)
	if err != nil {
		return Operation{}, fmt.Errorf("marshal block: %w", err)
	}
	var data map[string]any
	if err := json.Unmarshal(blockData, &data); err != nil {
		return Operation{}, fmt.Errorf("marshal block: %w", err)
	}
	data["flagged"] = true
	data["code"] = b.Code()
	data["message"] = b.Error()
	data["amount"] = r.Amount
	data["action"] = r.Action
	extra = append(extra, NewEvent(EventBudgetBlocked, actor, cur.ID, data))
	extra = append(extra, events...)
	return db.applyTransition(ctx, tx, cur, StateDenied, TransitionOpts{ErrorCode: b.Code(), Error: b.Error(), Actor: actor}, extra)
}

// CheckBudget applies Reserve's rules without writing anything: the applicable
// budgets with their current headroom, and the block Reserve would return (nil if
// it would pass). With an OperationID, agent and team come from the operation.
//
// Without one (an estimate), the state it reads comes from a snapshot kept in
// memory (spendSnapshots) until a write that could change it commits: at once
// for this process's writes, within the change watch's interval (50 ms on
// SQLite) for another process's. An estimate is advisory; Reserve always
// reads inside its own write transaction.
func (db *DB) CheckBudget(ctx context.Context, r ReserveRequest) ([]BudgetStatus, *BlockedError, error) {
	if err := r.validate(false); err != nil {
		return nil, nil, fmt.Errorf("check budget: %w", err)
	}
	if r.OperationID == "" {
		ev, err := db.spendSnapshots.evaluate(ctx, db, r)
		if err != nil {
			return nil, nil, fmt.Errorf("check budget: %w", err)
		}
		return slices.Clone(ev.statuses), ev.block, nil
	}
	var ev evaluation
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		agent, team := r.Agent, r.Team
		if r.OperationID != "" {
			op, err := getOperation(ctx, tx, r.OperationID)
			if err != nil {
				return err
			}
			agent, team = op.Agent, op.Team
		}
		var err error
		ev, err = evaluate(ctx, tx, db.now(), agent, team, r.Action, r.Amount, r.Commitment)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("check budget: %w", err)
	}
	return ev.statuses, ev.block, nil
}

// SettleRequest is what an execution really cost.
type SettleRequest struct {
	Actual money.Money     // the charged amount, in the quote's currency
	Result json.RawMessage // the operation's result
}

type hold struct {
	scope, win, period, currency, action string
	amount                               int64
}

func readHolds(ctx context.Context, tx *store.Tx, id string) ([]hold, error) {
	rows, err := tx.QueryContext(ctx, `SELECT scope, win, period, currency, action, amount_micros FROM holds WHERE operation_id = ?`, id)
	if err != nil {
		return nil, fmt.Errorf("read holds: %w", err)
	}
	defer rows.Close()
	var out []hold
	for rows.Next() {
		var h hold
		if err := rows.Scan(&h.scope, &h.win, &h.period, &h.currency, &h.action, &h.amount); err != nil {
			return nil, fmt.Errorf("read holds: %w", err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Settle moves an executing or in_doubt operation to succeeded and turns its holds
// into charges of Actual in the periods they were reserved in. Actual may differ
// from the quote; above it (the amount that was approved), it is settled anyway
// (the charge happened), the "budget.settled" event is flagged and the agent is
// frozen in the same transaction (the caller compares Actual with the quote to
// alert a human). The operation's commitment key is recorded
// once: if another operation already recorded it, its amount is not charged again.
// Settling twice is ErrStateConflict, never a second charge.
func (db *DB) Settle(ctx context.Context, id string, s SettleRequest, events ...Event) (Operation, error) {
	if err := money.CheckAmount("actual amount", s.Actual); err != nil {
		return Operation{}, fmt.Errorf("settle %s: %w", id, err)
	}
	if len(s.Result) > 0 && !json.Valid(s.Result) {
		return Operation{}, fmt.Errorf("settle %s: result is not valid JSON", id)
	}
	var op Operation
	err := db.write(ctx, func(tx *store.Tx) error {
		now := db.now()
		cur, err := getOperation(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := checkMove(cur, StateSucceeded, []State{StateExecuting, StateInDoubt}); err != nil {
			return err
		}
		if s.Actual.Currency != cur.Quote.Currency {
			return fmt.Errorf("actual amount %s is not in the quote's currency %s", s.Actual, cur.Quote.Currency)
		}
		holds, err := readHolds(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(holds) == 0 {
			return fmt.Errorf("operation %s is %s but holds nothing; the ledger is inconsistent, refusing to settle", id, cur.State)
		}
		charged := s.Actual
		data := map[string]any{"actual": s.Actual, "actual_text": s.Actual.String(), "quote": cur.Quote}
		if c := cur.Commitment; c != nil {
			var by string
			err := tx.QueryRowContext(ctx, `SELECT operation_id FROM commitments WHERE key = ?`, c.Key).Scan(&by)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if _, err := tx.ExecContext(ctx, `INSERT INTO commitments (key, operation_id, currency, amount_micros, recorded_at) VALUES (?, ?, ?, ?, ?)`,
					c.Key, id, c.Amount.Currency, c.Amount.Micros, now.UnixNano()); err != nil {
					return fmt.Errorf("record commitment: %w", err)
				}
				data["commitment"] = map[string]any{"key": c.Key, "amount": c.Amount, "recorded": true}
			case err != nil:
				return fmt.Errorf("read commitment: %w", err)
			default:
				charged.Micros = max(0, charged.Micros-c.Amount.Micros)
				data["commitment"] = map[string]any{"key": c.Key, "amount": c.Amount, "recorded": false, "recorded_by": by}
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE spend_totals AS t SET held_micros = t.held_micros - h.amount_micros, spent_micros = t.spent_micros + ?1
			FROM holds AS h WHERE h.operation_id = ?2
			AND t.scope = h.scope AND t.win = h.win AND t.period = h.period AND t.currency = h.currency`, charged.Micros, id); err != nil {
			return fmt.Errorf("update totals: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO charges (operation_id, scope, win, period, currency, action, amount_micros, at)
			SELECT operation_id, scope, win, period, currency, action, ?1, ?2 FROM holds WHERE operation_id = ?3`, charged.Micros, now.UnixNano(), id); err != nil {
			return fmt.Errorf("insert charges: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM holds WHERE operation_id = ?`, id); err != nil {
			return fmt.Errorf("delete holds: %w", err)
		}
		// A success has no error: an in_doubt detour's "outcome unknown" stays
		// in the history, not on the settled operation an agent reads.
		if _, err := tx.ExecContext(ctx, `UPDATE operations SET charged_micros = ?, error_code = '', error = '' WHERE id = ?`, charged.Micros, id); err != nil {
			return fmt.Errorf("record charge: %w", err)
		}
		data["charged"] = charged
		data["charged_text"] = charged.String()
		data["released"] = money.Money{Micros: holds[0].amount, Currency: holds[0].currency}
		over := s.Actual.Micros > cur.Quote.Micros
		if over {
			data["over_quote"] = true
			data["flagged"] = true
		}
		all := append([]Event{NewEvent(EventBudgetSettled, ActorSystem, id, data)}, events...)
		if op, err = db.applyTransition(ctx, tx, cur, StateSucceeded, TransitionOpts{Result: s.Result}, all); err != nil || !over {
			return err
		}
		// More was spent than a human (or policy) approved: settled all the
		// same, and the agent stops spending until someone has looked.
		_, _, err = db.freezeTx(ctx, tx, Freeze{
			Scope:  AgentScope(cur.Agent),
			Reason: fmt.Sprintf("charged %s for operation %s, above the %s approved", s.Actual, id, cur.Quote),
			By:     ActorSystem, At: now, Auto: true,
		}, id)
		return err
	})
	if err != nil {
		return Operation{}, fmt.Errorf("settle %s: %w", id, err)
	}
	return op, nil
}

// Release releases every hold of an operation and moves it to to (failed, denied,
// expired or cancelled) with the given error code and message, appending
// "budget.released" when there were holds. The mandate use the
// reservation consumed, if any, is given back in the same transaction
// ("mandate.use_returned"): nothing was charged. It works from any non-terminal state
// the state machine lets reach to (executing and in_doubt may only become failed);
// an operation without holds just transitions.
func (db *DB) Release(ctx context.Context, id string, to State, code, message string, events ...Event) (Operation, error) {
	return db.ReleaseFrom(ctx, id, nil, to, code, message, events...)
}

// ReleaseFrom is Release that first checks the operation is in one of from (any
// state when from is empty), returning a *StateConflictError otherwise. An expiry
// timer uses it so that an approval landing at the same moment is not undone:
// ReleaseFrom(ctx, id, []State{StateAwaitingApproval}, StateExpired, …).
func (db *DB) ReleaseFrom(ctx context.Context, id string, from []State, to State, code, message string, events ...Event) (Operation, error) {
	switch to {
	case StateFailed, StateDenied, StateExpired, StateCancelled:
	default:
		return Operation{}, fmt.Errorf("release %s: target state %s is not valid; use failed, denied, expired or cancelled", id, quoteInput(string(to)))
	}
	var op Operation
	err := db.write(ctx, func(tx *store.Tx) error {
		var err error
		op, err = db.releaseTx(ctx, tx, id, from, to, code, message, ActorSystem, events)
		return err
	})
	if err != nil {
		return Operation{}, fmt.Errorf("release %s: %w", id, err)
	}
	return op, nil
}

func (db *DB) releaseTx(ctx context.Context, tx *store.Tx, id string, from []State, to State, code, message, actor string, events []Event) (Operation, error) {
	cur, err := getOperation(ctx, tx, id)
	if err != nil {
		return Operation{}, err
	}
	if err := checkMove(cur, to, from); err != nil {
		return Operation{}, err
	}
	holds, err := readHolds(ctx, tx, id)
	if err != nil {
		return Operation{}, err
	}
	if len(holds) > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE spend_totals AS t SET held_micros = t.held_micros - h.amount_micros
			FROM holds AS h WHERE h.operation_id = ?
			AND t.scope = h.scope AND t.win = h.win AND t.period = h.period AND t.currency = h.currency`, id); err != nil {
			return Operation{}, fmt.Errorf("update totals: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE velocity_totals AS v SET count = v.count - 1
			FROM holds AS h WHERE h.operation_id = ? AND h.action <> '' AND h.win <> 'total'
			AND v.scope = h.scope AND v.action = h.action AND v.win = h.win AND v.period = h.period`, id); err != nil {
			return Operation{}, fmt.Errorf("update velocity counts: %w", err)
		}
	}
	var all []Event
	if len(holds) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM holds WHERE operation_id = ?`, id); err != nil {
			return Operation{}, fmt.Errorf("delete holds: %w", err)
		}
		all = append(all, NewEvent(EventBudgetReleased, actor, id, map[string]any{
			"released": money.Money{Micros: holds[0].amount, Currency: holds[0].currency}, "to": to, "code": code,
		}))
	}
	returned, err := db.returnMandateUse(ctx, tx, db.now(), cur, to, code, actor)
	if err != nil {
		return Operation{}, err
	}
	all = append(all, returned...)
	all = append(all, events...)
	return db.applyTransition(ctx, tx, cur, to, TransitionOpts{ErrorCode: code, Error: message, Actor: actor}, all)
}

// CommitmentRecorded reports whether a settled operation has already recorded the
// commitment key (so a plan can quote it as already paid). Reserve and Settle
// check it again inside their transactions; this answer is only for quoting.
func (db *DB) CommitmentRecorded(ctx context.Context, key string) (bool, error) {
	var n int
	if err := db.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM commitments WHERE key = ?`, key).Scan(&n); err != nil {
		return false, fmt.Errorf("read commitment %s: %w", quoteInput(key), err)
	}
	return n > 0, nil
}
