package tools

import (
	"encoding/json"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// Amount is money as tools show it: exact integer micro-units plus a human string.
type Amount struct {
	Micros   int64  `json:"micros" jsonschema:"the amount in millionths of the currency unit (exact integer)"`
	Currency string `json:"currency" jsonschema:"ISO 4217 currency code"`
	Display  string `json:"display" jsonschema:"human form, e.g. 10.44 USD"`
}

// AmountOf converts ledger money for display.
func AmountOf(m money.Money) Amount {
	return Amount{Micros: m.Micros, Currency: m.Currency, Display: m.String()}
}

func amountPtr(m *money.Money) *Amount {
	if m == nil {
		return nil
	}
	a := AmountOf(*m)
	return &a
}

// CostLine is one line of a price breakdown.
type CostLine struct {
	Item   string `json:"item"`
	Amount Amount `json:"amount"`
	Note   string `json:"note,omitempty"`
}

// PolicyView is a policy decision as the agent sees it.
type PolicyView struct {
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons,omitempty" jsonschema:"why the policy refused, in words"`
}

// BudgetView is one budget's headroom.
type BudgetView struct {
	Scope     string     `json:"scope" jsonschema:"agent:NAME, team:NAME or global"`
	Window    string     `json:"window" jsonschema:"day, month or total (calendar UTC)"`
	Limit     Amount     `json:"limit"`
	Spent     Amount     `json:"spent"`
	Held      Amount     `json:"held" jsonschema:"reserved by operations still in progress"`
	Remaining Amount     `json:"remaining"`
	ResetsAt  *time.Time `json:"resets_at,omitempty"`
	Fits      *bool      `json:"fits,omitempty" jsonschema:"whether the estimated amount fits in what remains"`
}

// BudgetViewOf converts a ledger budget status.
func BudgetViewOf(s ledger.BudgetStatus) BudgetView {
	return BudgetView{
		Scope:     string(s.Budget.Scope),
		Window:    string(s.Budget.Window),
		Limit:     AmountOf(s.Budget.Limit),
		Spent:     AmountOf(s.Spent),
		Held:      AmountOf(s.Held),
		Remaining: AmountOf(s.Remaining),
		ResetsAt:  s.ResetsAt,
	}
}

// LimitView is one velocity limit's use.
type LimitView struct {
	Scope    string    `json:"scope"`
	Action   string    `json:"action"`
	Window   string    `json:"window"`
	Max      int       `json:"max"`
	Used     int       `json:"used"`
	ResetsAt time.Time `json:"resets_at"`
}

// FreezeView is an active freeze that applies to the caller.
type FreezeView struct {
	Scope  string    `json:"scope"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Auto   bool      `json:"auto" jsonschema:"set automatically after repeated budget blocks"`
}

// EstimateResult is the structured output of estimate_cost.
type EstimateResult struct {
	Action         string          `json:"action"`
	Resource       string          `json:"resource" jsonschema:"the normalised target, e.g. domain:example.dev"`
	Arguments      json.RawMessage `json:"arguments" jsonschema:"the normalised arguments that were priced, with defaults filled in (years, compatibility_date)"`
	Amount         Amount          `json:"amount" jsonschema:"the most the call would spend, and what it would reserve"`
	Breakdown      []CostLine      `json:"breakdown"`
	Basis          string          `json:"basis" jsonschema:"live registrar quote, or the configured price book"`
	QuoteExpiresAt time.Time       `json:"quote_expires_at"`
	Policy         PolicyView      `json:"policy" jsonschema:"the policy decision for the real action"`
	Budgets        []BudgetView    `json:"budgets" jsonschema:"every budget that applies, with headroom"`
	WouldBlock     bool            `json:"would_block" jsonschema:"true if a budget, limit or freeze would refuse the call now, or no approval could be given"`
	BlockReason    string          `json:"block_reason,omitempty"`
	Approval       ApprovalNeed    `json:"approval"`
}

// ApprovalNeed says whether a call would wait for a human, and why.
type ApprovalNeed struct {
	Required  bool   `json:"required"`
	Approvals int    `json:"approvals,omitempty" jsonschema:"distinct approvers needed"`
	Why       string `json:"why,omitempty"`
	// Unavailable says why no approval could be given (the configured
	// approvers cannot meet the quorum); the call would fail, not wait.
	Unavailable string `json:"unavailable,omitempty" jsonschema:"set when the configured approvers cannot meet the quorum: the call would fail, not wait"`
	// CoveredByMandate names the standing approval that would approve the
	// call now, so no human is asked; the estimate consumes none of it.
	CoveredByMandate string     `json:"covered_by_mandate,omitempty" jsonschema:"the standing approval (mandate) that would approve this call now without a human; an estimate uses none of it"`
	RemainingUses    int        `json:"remaining_uses,omitempty" jsonschema:"calls that mandate may still cover, this one included"`
	MandateRemaining *Amount    `json:"mandate_remaining,omitempty" jsonschema:"what that mandate may still cover in total, this call included"`
	MandateExpiresAt *time.Time `json:"mandate_expires_at,omitempty"`
}

// ApprovalView is the approval attached to an Operation.
type ApprovalView struct {
	ID        string    `json:"id"`
	State     string    `json:"state" jsonschema:"pending, approved, denied, expired or cancelled"`
	Approvals int       `json:"approvals"`
	Needed    int       `json:"needed"`
	ExpiresAt time.Time `json:"expires_at"`
	DecidedBy []string  `json:"decided_by,omitempty"`
	Reason    string    `json:"reason,omitempty" jsonschema:"the approver's reason for a denial"`
}

// HistoryEntry is one step in an Operation's story.
type HistoryEntry struct {
	At    time.Time `json:"at"`
	Event string    `json:"event"`
	Actor string    `json:"actor,omitempty"`
	Note  string    `json:"note,omitempty"`
}

// OperationView is an Operation as tools return it. register_domain,
// deploy_worker and get_operation all return this shape.
type OperationView struct {
	OperationID string          `json:"operation_id"`
	Status      string          `json:"status" jsonschema:"planned, authorized, reserved, awaiting_approval, approved, executing, succeeded, failed, denied, expired, cancelled or in_doubt"`
	Tool        string          `json:"tool"`
	Resource    string          `json:"resource"`
	Arguments   json.RawMessage `json:"arguments,omitempty" jsonschema:"the normalised arguments the operation is bound to"`
	Reason      string          `json:"reason,omitempty" jsonschema:"the reason the agent gave"`
	Quote       *Amount         `json:"quote,omitempty" jsonschema:"the amount reserved"`
	Charged     *Amount         `json:"charged,omitempty"`
	Result      json.RawMessage `json:"result,omitempty" jsonschema:"what Cloudflare returned, when succeeded"`
	ErrorCode   string          `json:"error_code,omitempty"`
	Error       string          `json:"error,omitempty"`
	Approval    *ApprovalView   `json:"approval,omitempty"`
	ExpiresAt   *time.Time      `json:"expires_at,omitempty" jsonschema:"when a pending approval expires"`
	HowToResume string          `json:"how_to_resume,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	History     []HistoryEntry  `json:"history,omitempty" jsonschema:"every step of the operation's story; only when asked for (get_operation history=true)"`
}

// OperationURI is the MCP resource of an Operation, which the server serves
// and lets clients subscribe to.
func OperationURI(id string) string { return "tollgate://operations/" + id }

// ViewOf converts a stored Operation.
func ViewOf(op ledger.Operation) OperationView {
	v := OperationView{
		OperationID: op.ID,
		Status:      string(op.State),
		Tool:        op.Tool,
		Resource:    op.Resource,
		Arguments:   op.Args,
		Reason:      op.Reason,
		Charged:     amountPtr(op.Charged),
		Result:      op.Result,
		ErrorCode:   op.ErrorCode,
		Error:       op.Error,
		CreatedAt:   op.CreatedAt,
		UpdatedAt:   op.UpdatedAt,
	}
	if !op.Quote.IsZero() || op.Quote.Currency != "" {
		v.Quote = amountPtr(&op.Quote)
	}
	if !op.State.Terminal() {
		v.ExpiresAt = op.ExpiresAt
		v.HowToResume = "Call get_operation with operation_id " + op.ID +
			" (it can wait up to 50 seconds for a change); repeating the same call with the same idempotency_key returns this same operation."
	}
	return v
}

// OperationList is the structured output of list_operations.
type OperationList struct {
	Operations []OperationView `json:"operations"`
	NextCursor string          `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page"`
}

// SpendView is what a scope spent and holds in one window's current period.
type SpendView struct {
	Scope  string `json:"scope" jsonschema:"agent:NAME, team:NAME or global"`
	Window string `json:"window" jsonschema:"day, month or total (calendar UTC)"`
	Period string `json:"period" jsonschema:"the day (2026-11-22), month (2026-11) or total"`
	Spent  Amount `json:"spent" jsonschema:"charged by operations that succeeded"`
	Held   Amount `json:"held" jsonschema:"reserved by operations still in progress"`
}

// SpendStatusResult is the structured output of spend_status.
type SpendStatusResult struct {
	Agent   string       `json:"agent"`
	Team    string       `json:"team"`
	Spend   []SpendView  `json:"spend" jsonschema:"what you, your team and everyone spent and hold today, this month and in total, with or without budgets"`
	Budgets []BudgetView `json:"budgets"`
	Limits  []LimitView  `json:"limits"`
	Frozen  []FreezeView `json:"frozen" jsonschema:"freezes that stop this agent's spending; empty when it may spend"`
}
