// Package approvals is the channel-neutral core of the human approvals that
// irreversible tollgate operations wait for: requests bound to the exact
// arguments and maximum amount of one Operation, votes, quorum, the
// self-approval rule, the policy check of every voter, expiry, and single-use
// consumption at execution time.
//
// Channels stand beside the core, each in its own package, as in teleport's
// access plugins: approvals/slack (Block Kit messages, signed interactivity,
// Socket Mode), approvals/web (the console), and the CLI in cmd/tollgate. A
// channel presents requests and collects votes only through the core's API
// (Decide, Check, Freeze, Get, List); one that posts somewhere implements
// Channel, and the core keeps what it posted in step with the request.
//
// The package owns its tables (see Migrations), the channels' included, on the
// ledger's store, and never imports ledger, authz, cloudflare, tools or
// server: the policy check, the audit chain and the reactions to a decision
// arrive as funcs in Options.
package approvals

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// Request states.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
)

// Vote channels (Vote.Via, VoteInput.Via).
const (
	ViaSlack  = "slack"  // signed HTTP interactivity endpoint
	ViaSocket = "socket" // Slack Socket Mode
	ViaCLI    = "cli"    // tollgate approvals approve|deny
	ViaWeb    = "web"    // the console at /console/
)

// ViaLabel names a vote channel for people: "Slack", "CLI", "web console".
func ViaLabel(via string) string {
	switch via {
	case ViaSlack:
		return "Slack"
	case ViaSocket:
		return "Slack (Socket Mode)"
	case ViaCLI:
		return "CLI"
	case ViaWeb:
		return "web console"
	}
	return via
}

func validVia(via string) bool {
	switch via {
	case ViaSlack, ViaSocket, ViaCLI, ViaWeb:
		return true
	}
	return false
}

// Vote outcomes. They double as the Authorizer actions for a vote.
const (
	OutcomeApprove = "approve"
	OutcomeDeny    = "deny"
)

// ActionFreeze is the Authorizer action for the Freeze agent button.
const ActionFreeze = "freeze"

// Audit event types written through Options.Audit.
const (
	EventRequested       = "approval.requested"        // a request was persisted
	EventVoted           = "approval.voted"            // an accepted vote
	EventDecided         = "approval.decided"          // the request became approved or denied
	EventRejected        = "approval.rejected"         // a vote or click that changed nothing, with the reason
	EventExpired         = "approval.expired"          // pending past its expiry
	EventCancelled       = "approval.cancelled"        // cancelled (freeze)
	EventWithdrawn       = "approval.withdrawn"        // withdrawn by the agent (Withdraw)
	EventConsumed        = "approval.consumed"         // the single use at execution
	EventConsumeRejected = "approval.consume_rejected" // an execution the approval does not cover
	EventFreezeRequested = "approval.freeze"           // the Freeze agent button was accepted
)

// Approver is a human who may vote, mapped from config.
type Approver struct {
	Name        string   `json:"name"`                    // principal id for Cerbos and the audit trail
	SlackUserID string   `json:"slack_user_id,omitempty"` // Slack user id ("U…"), "" if the approver uses the CLI only
	OSUser      string   `json:"os_user,omitempty"`       // local OS user for the CLI approver, "" = Name
	Roles       []string `json:"roles"`                   // Cerbos roles, e.g. approver, finance_approver
}

// Field is one normalised argument, shown in order.
type Field struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Module describes a Worker module without its source.
type Module struct {
	Name       string `json:"name"`
	Size       int    `json:"size"`
	SHA256     string `json:"sha256"`
	FirstLines string `json:"first_lines"`
}

// Request is one approval request, bound to one Operation's exact arguments
// (ArgsHash) and maximum amount (AmountMicros, Currency).
type Request struct {
	ID            string    `json:"id"` // "apr_" + random; filled by Service.Request when empty
	OperationID   string    `json:"operation_id"`
	Tool          string    `json:"tool"` // register_domain | deploy_worker | any tool a policy sends for approval
	Agent         string    `json:"agent"`
	Team          string    `json:"team"`
	Owner         string    `json:"owner,omitempty"` // the human accountable for the agent (an approver name); may never vote on it
	Client        string    `json:"client"`          // "claude-code 1.2.3 (session abc)"
	Summary       string    `json:"summary"`         // one line: "Register example.dev for 1 year"
	Args          []Field   `json:"args"`
	Module        *Module   `json:"module,omitempty"`
	AmountMicros  int64     `json:"amount_micros"` // the bound maximum, integer micro-units
	Currency      string    `json:"currency"`
	AmountText    string    `json:"amount_text"` // "8.57 USD"; derived from AmountMicros when empty
	Headroom      []string  `json:"headroom"`    // "team:web day — 16.43 USD left of 25.00 USD"
	Reason        string    `json:"reason"`      // the agent's stated reason
	Policy        string    `json:"policy"`      // the policy decision in words
	ArgsHash      string    `json:"args_hash"`   // hash of the normalised arguments
	Irreversible  bool      `json:"irreversible"`
	Quorum        int       `json:"quorum"`   // distinct approvers required; 0 means 1
	State         string    `json:"state"`    // pending | approved | denied | expired | cancelled
	Consumed      bool      `json:"consumed"` // single use: set by Consume
	ConsumedAt    time.Time `json:"consumed_at,omitzero"`
	DecidedReason string    `json:"decided_reason,omitempty"`
	DecidedAt     time.Time `json:"decided_at,omitzero"` // zero while pending
	Votes         []Vote    `json:"votes"`
	CreatedAt     time.Time `json:"created_at"`
	ExpiresAt     time.Time `json:"expires_at"`
	ResultText    string    `json:"result_text,omitempty"` // execution outcome shown on the message
	Withdrawn     bool      `json:"withdrawn,omitempty"`   // cancelled because the agent withdrew it (Withdraw)
}

// Approvals counts the distinct approve votes.
func (r Request) Approvals() int {
	n := 0
	for _, v := range r.Votes {
		if v.Outcome == OutcomeApprove {
			n++
		}
	}
	return n
}

// Vote is one accepted vote.
type Vote struct {
	Approver string    `json:"approver"`
	User     string    `json:"user,omitempty"` // the voter as the channel knows them (a Slack user id)
	Via      string    `json:"via"`            // slack | socket | cli | web
	Outcome  string    `json:"outcome"`        // approve | deny
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// VoteInput asks Decide to record a vote. The channel names the voter: Approver
// is the approver it resolved its user to ("" when its user maps to no
// approver, which Decide refuses and audits), User is that user in the
// channel's own terms (a Slack user id), kept for the audit trail.
type VoteInput struct {
	RequestID string
	Approver  string
	User      string
	Via       string // slack | socket | cli | web
	Outcome   string // approve | deny
	Reason    string // required in spirit for deny; stored and audited
}

// Outcome is the result of an accepted vote.
type Outcome struct {
	Request   Request
	Final     bool // the request is now approved or denied
	Approvals int  // distinct approve votes so far
	Needed    int  // the quorum
}

// Authorizer asks the policy engine whether approver a may take action
// (approve | deny | freeze) on request r. An error means deny (fail closed).
type Authorizer func(ctx context.Context, a Approver, r Request, action string) (allowed bool, reason string, err error)

// AuditFunc appends one event to the audit chain. tx is the caller's open
// transaction, so the event commits with the change, or nil for a standalone
// event. An error fails the operation.
type AuditFunc func(ctx context.Context, tx *store.Tx, typ, actor, operationID string, data map[string]any) error

// Errors returned by Decide, Consume, Cancel and the getters; test with errors.Is.
var (
	ErrNotFound       = errors.New("approval request not found")
	ErrExpired        = errors.New("approval request expired")
	ErrAlreadyDecided = errors.New("approval request already decided")
	ErrNotApprover    = errors.New("not a configured approver")
	ErrSelfApproval   = errors.New("the agent's owner may not decide its own request")
	ErrDuplicateVote  = errors.New("this approver already voted on the request")
	ErrCancelled      = errors.New("approval request cancelled")
	// ErrWithdrawn: the agent withdrew the request; errors.Is(ErrWithdrawn, ErrCancelled) holds.
	ErrWithdrawn       = fmt.Errorf("%w: withdrawn by the agent", ErrCancelled)
	ErrBindingMismatch = errors.New("execution does not match the approved binding")
	ErrConsumed        = errors.New("approval already used for an execution")
	// ErrNotApproved: Consume on a request that is pending or denied.
	ErrNotApproved = errors.New("approval request is not approved")
	// ErrAmountExceeded accompanies ErrBindingMismatch when the amount at
	// execution is above the approved maximum.
	ErrAmountExceeded = errors.New("amount above the approved maximum")
	// ErrInvalidInput: a request or vote that is malformed; the message says what is allowed.
	ErrInvalidInput = errors.New("invalid input")
	// ErrFreezeUnavailable: Freeze on a service without Options.OnFreeze.
	ErrFreezeUnavailable = errors.New("freeze is not enabled on this server")
)

// NotAllowedError reports that the policy engine refused the approver (or
// could not be asked, which counts as a refusal).
type NotAllowedError struct {
	Reason string
	cause  error
}

// Error reports the refusal with the policy's reason.
func (e *NotAllowedError) Error() string { return "not allowed by policy: " + e.Reason }

// Unwrap returns the Authorizer's error when the refusal came from one.
func (e *NotAllowedError) Unwrap() error { return e.cause }

// ValidRequestID reports whether id has the form of a request id ("apr_…"),
// for channels that read one from untrusted input.
func ValidRequestID(id string) bool { return requestIDPattern.MatchString(id) }
