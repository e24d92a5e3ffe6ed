// Package tools defines tollgate's MCP tools: their typed arguments and
// schemas, input normalisation, and, for the tools that change the world,
// how to plan (price and policy resource) and execute them. The pipeline that
// carries a call through policy, budget, approval and execution lives in the
// server package, which implements Runner.
package tools

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// Runner is the pipeline behind the tools. The server implements it; tools
// only decode, normalise, and shape results.
type Runner interface {
	PlanEnv
	// Authorize asks the policy engine whether the caller may perform action on
	// res, and records the decision in the audit trail. It fails closed.
	Authorize(ctx context.Context, res authz.Resource, action string) authz.Decision
	// AuthorizeAll asks about several resources, one action each, in one
	// policy call, and records the decisions in one audit append. It fails
	// closed: every decision is a deny when the audit trail is unavailable.
	AuthorizeAll(ctx context.Context, checks []authz.Check) []authz.Decision
	// Estimate plans m without side effects: price, policy decision for the
	// real action, budget headroom and whether approval would be needed.
	Estimate(ctx context.Context, m Mutation, call Call) (EstimateResult, error)
	// Mutate carries a mutating call through the whole pipeline and returns
	// the Operation as it stands when the call returns.
	Mutate(ctx context.Context, m Mutation, call Call) (OperationView, error)
	// Operation returns one of the caller's operations, waiting up to wait for
	// it to leave a non-terminal state; with history, every step of its story.
	Operation(ctx context.Context, id string, wait time.Duration, history bool) (OperationView, error)
	// CancelOperation withdraws one of the caller's operations that waits for
	// a human: its approval is withdrawn and its hold released.
	CancelOperation(ctx context.Context, id, reason string) (OperationView, error)
	// Operations lists the caller's operations, newest first.
	Operations(ctx context.Context, q ListOperationsArgs) (OperationList, error)
	// SpendStatus reports the caller's budgets, limits and freezes.
	SpendStatus(ctx context.Context) (SpendStatusResult, error)
	// Progress returns the reporter of a call's MCP progress notifications,
	// delivered in order on the call's own stream; a no-op without a token.
	Progress(ctx context.Context, token mcp.ProgressToken) func(message string)
}

// PlanEnv is what a Mutation may consult while planning.
type PlanEnv interface {
	// Lookup reads zones and custom domains (a plan made from the cache
	// alone stops at the first lookup, so the arguments are checked by
	// policy before anything reaches Cloudflare).
	Lookup
	// TeamSucceeded reports whether the caller's team has an operation of
	// tool on resource that succeeded: what the team did through tollgate.
	TeamSucceeded(ctx context.Context, tool, resource string) (bool, error)
	// Quote is the registrar's domain-check answer for domain, live or
	// cached within its own validity.
	Quote(ctx context.Context, domain string) (Quote, error)
	// CommitmentRecorded reports whether a once-per-key charge was already settled.
	CommitmentRecorded(ctx context.Context, key string) (bool, error)
	// Now is the pipeline's clock.
	Now() time.Time
}

// Lookup is what tollgate may read at Cloudflare to plan a call or scope
// its token, under a shared read-only token.
type Lookup interface {
	// ZoneFor is the account's zone hostname is on (cloudflare.ErrNotFound
	// when none is).
	ZoneFor(ctx context.Context, hostname string) (cloudflare.Zone, error)
	// CustomDomains lists the account's Workers custom domains matching f.
	CustomDomains(ctx context.Context, f cloudflare.DomainFilter) ([]cloudflare.CustomDomain, error)
	// Zones lists the account's zones.
	Zones(ctx context.Context) ([]cloudflare.Zone, error)
	// Workers lists the account's Workers.
	Workers(ctx context.Context) ([]cloudflare.WorkerSummary, error)
}

// ZoneScoped is a Mutation whose execution token holds zone permission
// groups: it names the zones of a call, and the token holds them on
// exactly those.
type ZoneScoped interface {
	Zones(ctx context.Context, l Lookup, args json.RawMessage) ([]string, error)
}

// Quote is a registrar answer and until when it may be presented as the
// price: a cached quote keeps the expiry it had when it was fetched.
type Quote struct {
	cloudflare.DomainCheck
	ExpiresAt time.Time
}

// DefaultQuoteTTL is how long a registrar quote is valid unless configured.
const DefaultQuoteTTL = 5 * time.Minute

// Call is one normalised mutating call, ready to become an Operation.
type Call struct {
	Tool           string
	Args           json.RawMessage // canonical normalised arguments (no Worker source)
	ArgsHash       string          // sha256 over Args, the approval binding
	Resource       string          // "domain:example.dev"
	Reason         string
	IdempotencyKey string
	Blob           []byte // Worker module source, stored content-addressed
	// Progress reports a human-readable step to the client while the call
	// waits (MCP progress notifications); never nil.
	Progress func(message string)
}

// Mutation is a tool that changes something at Cloudflare: it can be
// planned, executed with a scoped token, and reconciled after a crash.
type Mutation interface {
	// Name is the tool name, e.g. "register_domain".
	Name() string
	// Action is the Cerbos action for the real call, e.g. "register".
	Action() string
	// Access is what the token minted to execute holds, and nothing more.
	Access() Access
	// PreResource is the policy resource built from the arguments alone, so
	// a call the policy refuses never reaches Cloudflare, not even for a price.
	PreResource(args json.RawMessage) (authz.Resource, error)
	// Plan prices the call and builds its policy resource and approval view.
	Plan(ctx context.Context, env PlanEnv, args json.RawMessage, blob []byte) (Plan, error)
	// AlwaysNeedsApproval is the hard rule no policy can lift: true for
	// irreversible calls (every registration, every production deploy).
	AlwaysNeedsApproval(args json.RawMessage) bool
	// Execute performs the call with a session minted for it alone. It
	// re-checks the price first and refuses to spend above MaxAmount. Errors
	// that wrap ErrNotAttempted mean Cloudflare was not asked to change anything.
	Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error)
	// Reconcile asks Cloudflare whether an interrupted execution took
	// effect. found=false means it did not and the hold can be released.
	Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (out Outcome, found bool, err error)
}

// Access is a mutation's least privilege at Cloudflare.
type Access struct {
	// Execute are the permission groups of the token an execution gets:
	// account groups on the account, zone groups on exactly the zones of
	// the call (a Mutation with zone groups implements ZoneScoped).
	Execute cloudflare.Permissions
	// Reconcile are those of the read-only token that asks Cloudflare
	// whether an interrupted execution took effect.
	Reconcile cloudflare.Permissions
}

// Plan is everything the pipeline needs to authorize, reserve and ask for approval.
type Plan struct {
	Resource       authz.Resource
	Amount         money.Money        // the maximum this call may spend
	Commitment     *ledger.Commitment // a once-per-period charge included in Amount
	Breakdown      []CostLine
	Basis          string // "live registrar quote" or "configured price book"
	QuoteExpiresAt time.Time
	// Irreversible calls always wait for a human, whatever the policy says.
	Irreversible bool
	// Summary is one line for humans: "Register example.dev for 1 year".
	Summary string
	Fields  []approvals.Field
	Module  *approvals.Module
}

// ExecInput is a stored Operation as an executor sees it.
type ExecInput struct {
	OperationID string
	Args        json.RawMessage
	Blob        []byte
	MaxAmount   money.Money
}

// Outcome is what an execution achieved and what it cost.
type Outcome struct {
	Result  any
	Charged money.Money
	Summary string // one line for the approval message and the audit trail
	// Rollout, when not finished, is a gradual rollout the pipeline moves
	// on step by step before settling.
	Rollout *Rollout
}

// ErrNotAttempted marks an execution error raised before any request that
// could change something at Cloudflare, so the Operation can fail outright
// instead of becoming in_doubt.
var ErrNotAttempted = errors.New("nothing was changed at Cloudflare")

// Tool is one MCP tool: its definition and handler.
type Tool = server.ServerTool

// Config carries the settings tools need.
type Config struct {
	// Workers is the price book for Worker deploys (server.Config.Pricing;
	// its defaults are Cloudflare's published Workers Paid prices).
	Workers WorkersPricing
	// QuoteTTL is how long a price quote is presented as valid.
	QuoteTTL time.Duration
}

// WorkersPricing is the configured price book for Workers (Cloudflare bills
// Workers by plan and usage, so there is no live quote to ask for).
type WorkersPricing struct {
	Currency           string
	MonthlyPlan        money.Money // committed once per month on the first production deploy
	PerMillionRequests money.Money
	PerMillionCPUMs    money.Money
}

func (c Config) withDefaults() Config {
	if c.QuoteTTL <= 0 {
		c.QuoteTTL = DefaultQuoteTTL
	}
	return c
}
