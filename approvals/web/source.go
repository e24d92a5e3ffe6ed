package web

import (
	"context"
	"errors"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// Source is what the console shows besides approval requests: operations,
// their audit story, budgets and spend, the audit chain, a Worker's live
// script. The server implements it over the ledger and the pipeline (approvals
// never imports them). Every method is read-only.
type Source interface {
	// Operation returns one operation; ErrNotFound when there is none.
	Operation(ctx context.Context, id string) (Operation, error)
	// Operations returns a page of operations, newest first, and the cursor of
	// the next page ("" at the end).
	Operations(ctx context.Context, cursor string, limit int) ([]Operation, string, error)
	// Timeline is an operation's story as tollgate audit show tells it.
	Timeline(ctx context.Context, id string) ([]TimelineEntry, error)
	// Budgets returns every budget with what is spent and held now.
	Budgets(ctx context.Context) ([]Budget, error)
	// Headroom returns every budget that applies to r's agent, before r's hold
	// and after it.
	Headroom(ctx context.Context, r approvals.Request) ([]Headroom, error)
	// DailySpend returns what was charged per day and currency since since.
	DailySpend(ctx context.Context, since time.Time) ([]DaySpend, error)
	// AuditStatus verifies the audit chain (or returns a recent verification).
	AuditStatus(ctx context.Context) (AuditStatus, error)
	// ScriptChange compares the Worker module r would deploy with what runs
	// now; nil when r is not a Worker deploy.
	ScriptChange(ctx context.Context, r approvals.Request) (*ScriptChange, error)
	// Changes receives soon after anything in the ledger changes, in this
	// process or another; the func ends the subscription.
	Changes() (<-chan struct{}, func())
}

// ErrNotFound is what a Source returns for an id it does not know.
var ErrNotFound = errors.New("not found")

// Operation is an operation as the console lists it.
type Operation struct {
	ID, Tool, Resource, Agent, Team, State string
	Reason, Client                         string
	Quote                                  money.Money // the reserved amount (zero before planning)
	Basis                                  string      // where the quote came from ("live registrar quote")
	Charged                                *money.Money
	ErrorCode, Error                       string
	CreatedAt, UpdatedAt                   time.Time
	ExpiresAt                              *time.Time
	// Consequence says what approving the operation does beyond its
	// summary, as its tool declares it ("" when unknown: a generic sentence
	// is shown). Set by Source.Operation, not in lists.
	Consequence string
}

// TimelineEntry is one audit event of an operation.
type TimelineEntry struct {
	At      time.Time
	Elapsed time.Duration // since the operation was created
	Event   string        // operation.state, policy.decision, …
	Actor   string
	Detail  string // one line, as tollgate audit show prints it
}

// Budget is one budget and where it stands.
type Budget struct {
	Scope, Window      string
	Limit, Spent, Held money.Money
	Remaining          money.Money
	ResetsAt           *time.Time
}

// Headroom is one budget before and after a request's amount.
type Headroom struct {
	Scope, Window string
	Limit         money.Money
	Before, After money.Money // what is left without the request's hold, and with it
	Fits          bool
}

// DaySpend is what was charged on one UTC day in one currency.
type DaySpend struct {
	Day        time.Time
	Amount     money.Money
	Operations int
}

// AuditStatus is the result of verifying the audit chain.
type AuditStatus struct {
	OK         bool
	Checked    int64
	BrokenSeq  int64
	Reason     string
	VerifiedAt time.Time
	Note       string // what the verification covers (keyed chain, anchors), in words
}

// ScriptChange is a Worker deploy's module next to what it replaces.
type ScriptChange struct {
	Script string // the deployed name
	New    string // the module the request would deploy
	Old    string // what runs now; "" when nothing was found
	// From says where Old came from, in words: "live at Cloudflare (etag …,
	// fetched …)" or "the last version tollgate deployed (operation op_…)".
	From string
	// Missing says why there is no Old ("no script of that name is live").
	Missing string
}
