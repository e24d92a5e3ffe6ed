package approvals

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
)

//go:embed migrations
var migrationFiles embed.FS

// Migrations are this package's numbered schema files, per dialect; the ledger
// applies them with ledger.WithMigrations(approvals.Migrations).
var Migrations = store.Embedded("approvals", migrationFiles, "migrations")

// Defaults for Options.
const (
	DefaultRetryMin       = 2 * time.Second
	DefaultRetryMax       = 5 * time.Minute
	DefaultExpiryInterval = 5 * time.Second
	DefaultSyncInterval   = time.Second
	DefaultChannelTimeout = 10 * time.Second
)

// Options configure a Service. Authorizer and Audit are required: without them
// no vote could be checked or recorded, so NewService refuses to start.
type Options struct {
	// Approvers are the humans who may vote, from config.
	Approvers []Approver
	// Authorizer asks Cerbos (resource approval, actions approve|deny|freeze).
	Authorizer Authorizer
	// Audit appends to the ledger's hash chain.
	Audit AuditFunc
	// Clock is the time source for expiry, votes and retry schedules; default time.Now.
	Clock func() time.Time
	// Logger receives the package's logs; default slog.Default().
	Logger *slog.Logger
	// OnDecided runs after a final approve or deny commits. It may run more than
	// once for one request (a crash between the call and its bookkeeping, or a
	// decision made by another process and picked up by Run): Consume keeps
	// execution single-use. It should return quickly; Slack waits for the click's answer.
	// ctx carries the caller's values but is never cancelled by the click's
	// request ending; long work (the execution) belongs in the server's own goroutine.
	OnDecided func(ctx context.Context, r Request)
	// OnExpired runs after a request expires (same delivery rules as OnDecided).
	OnExpired func(ctx context.Context, r Request)
	// OnFreeze freezes the agent when an approver presses Freeze agent (in any
	// channel, named by via). It must also cancel the agent's pending
	// operations and their approvals (Cancel). nil disables Freeze (refused
	// and audited).
	OnFreeze func(ctx context.Context, agent string, by Approver, via string) error
	// Mandates creates standing approvals given with an approve vote
	// (ApproveWithMandate); nil disables them (channels offer none).
	Mandates Mandates
	// RetryMin and RetryMax bound the exponential backoff of channel posts and updates.
	RetryMin, RetryMax time.Duration
	// ExpiryInterval is how often Run expires due requests and delivers missed decisions.
	ExpiryInterval time.Duration
	// SyncInterval is how often Run retries channel posts and updates that are due.
	SyncInterval time.Duration
	// ChannelTimeout bounds each call to a channel (one Slack Web API call).
	ChannelTimeout time.Duration
}

// Validate reports every problem in o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Authorizer == nil {
		errs = append(errs, errors.New("Authorizer is required: without a policy check no vote can be accepted"))
	}
	if o.Audit == nil {
		errs = append(errs, errors.New("Audit is required: every vote and rejection must be recorded"))
	}
	names := map[string]bool{}
	slackIDs := map[string]string{}
	osUsers := map[string]string{}
	for i, a := range o.Approvers {
		if strings.TrimSpace(a.Name) == "" {
			errs = append(errs, fmt.Errorf("approver %d: name is required", i))
			continue
		}
		key := strings.ToLower(a.Name)
		if names[key] {
			errs = append(errs, fmt.Errorf("approver %q: listed twice (names are case-insensitive)", a.Name))
		}
		names[key] = true
		if a.SlackUserID != "" {
			if !slackUserIDPattern.MatchString(a.SlackUserID) {
				errs = append(errs, fmt.Errorf("approver %q: slack_user_id %q is not a Slack user id (like U024BE7LH)", a.Name, a.SlackUserID))
			}
			if other, dup := slackIDs[a.SlackUserID]; dup {
				errs = append(errs, fmt.Errorf("approvers %q and %q share slack_user_id %s", other, a.Name, a.SlackUserID))
			}
			slackIDs[a.SlackUserID] = a.Name
		}
		if a.OSUser != "" {
			if other, dup := osUsers[a.OSUser]; dup {
				errs = append(errs, fmt.Errorf("approvers %q and %q share os_user %s", other, a.Name, a.OSUser))
			}
			osUsers[a.OSUser] = a.Name
		}
	}
	if o.RetryMin < 0 || o.RetryMax < 0 || o.ExpiryInterval < 0 || o.SyncInterval < 0 || o.ChannelTimeout < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if o.RetryMin > 0 && o.RetryMax > 0 && o.RetryMin > o.RetryMax {
		errs = append(errs, fmt.Errorf("RetryMin %s is above RetryMax %s", o.RetryMin, o.RetryMax))
	}
	if len(errs) > 0 {
		return fmt.Errorf("approvals options: %w", errors.Join(errs...))
	}
	return nil
}

var (
	slackUserIDPattern = regexp.MustCompile(`^[UW][A-Z0-9]{2,20}$`)
	requestIDPattern   = regexp.MustCompile(`^apr_[a-z0-9]{1,60}$`)
)

// Service records approval requests and votes. It is safe for concurrent use,
// and several processes may share one database (the server and the CLI).
type Service struct {
	st     *store.Store
	o      Options
	log    *slog.Logger
	byName map[string]Approver // lower-cased name
	byOS   map[string]Approver

	mu       sync.Mutex
	channels []Channel       // where requests are presented (AddChannel)
	inflight map[string]bool // requests whose hook runs in this process now
	syncing  map[string]bool // requests whose posts this process is syncing now
	again    map[string]bool // a change arrived while syncing: sync once more
}

// NewService checks o and returns a Service on st, the ledger's store (the
// tables come from Migrations).
func NewService(st *store.Store, o Options) (*Service, error) {
	if st == nil {
		return nil, errors.New("approvals: store is nil")
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RetryMin == 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax == 0 {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	if o.ExpiryInterval == 0 {
		o.ExpiryInterval = DefaultExpiryInterval
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.ChannelTimeout == 0 {
		o.ChannelTimeout = DefaultChannelTimeout
	}
	s := &Service{
		st:       st,
		o:        o,
		log:      o.Logger.With(slog.String("component", "approvals")),
		byName:   map[string]Approver{},
		byOS:     map[string]Approver{},
		inflight: map[string]bool{},
		syncing:  map[string]bool{},
		again:    map[string]bool{},
	}
	for _, a := range o.Approvers {
		a.Roles = append([]string(nil), a.Roles...)
		s.byName[strings.ToLower(a.Name)] = a
		if a.OSUser != "" {
			s.byOS[a.OSUser] = a
		}
	}
	return s, nil
}

func (s *Service) now() time.Time { return s.o.Clock().UTC() }

// Now is the service's clock (the one expiry counts on).
func (s *Service) Now() time.Time { return s.now() }

// Store is the database the service keeps its tables on; channels keep
// theirs (a replay cache, console sessions) on it too.
func (s *Service) Store() *store.Store { return s.st }

// Approvers returns the configured approvers.
func (s *Service) Approvers() []Approver {
	out := make([]Approver, len(s.o.Approvers))
	for i, a := range s.o.Approvers {
		a.Roles = slices.Clone(a.Roles)
		out[i] = a
	}
	return out
}

// Record appends one event to the audit chain outside any transaction, for
// what a channel refuses before a vote exists (a forged Slack request).
func (s *Service) Record(ctx context.Context, typ, actor, operationID string, data map[string]any) error {
	return s.o.Audit(ctx, nil, typ, actor, operationID, data)
}

// ApproverForOSUser maps the local CLI user to an approver: by OSUser, else by Name.
func (s *Service) ApproverForOSUser(user string) (Approver, bool) {
	if a, ok := s.byOS[user]; ok {
		return a, true
	}
	a, ok := s.byName[strings.ToLower(user)]
	if ok && a.OSUser != "" && a.OSUser != user {
		// This approver is bound to another OS account; a matching name is not enough.
		return Approver{}, false
	}
	return a, ok
}

// ApproverByName returns the configured approver with this name.
func (s *Service) ApproverByName(name string) (Approver, bool) {
	a, ok := s.byName[strings.ToLower(name)]
	return a, ok
}

// newRequestID returns "apr_" + 26 lower-case base32 characters (128 random bits).
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "apr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// validateNew checks a new request and fills defaults. It names every problem.
func (s *Service) validateNew(r *Request, now time.Time) error {
	var problems []string
	if r.ID == "" {
		r.ID = newRequestID()
	} else if !requestIDPattern.MatchString(r.ID) {
		problems = append(problems, fmt.Sprintf("id %q must be \"apr_\" followed by 1-60 lower-case letters or digits", r.ID))
	}
	need := func(name, v string) {
		if strings.TrimSpace(v) == "" {
			problems = append(problems, name+" is required")
		} else if len(v) > 512 {
			problems = append(problems, name+" is longer than 512 bytes")
		}
	}
	need("operation_id", r.OperationID)
	need("tool", r.Tool)
	need("agent", r.Agent)
	need("args_hash", r.ArgsHash)
	if strings.ContainsAny(r.ArgsHash, " \t\r\n") {
		problems = append(problems, "args_hash must not contain whitespace")
	}
	if r.AmountMicros < 0 {
		problems = append(problems, fmt.Sprintf("amount_micros %d is negative; amounts are ≥ 0 micro-units", r.AmountMicros))
	}
	if err := money.CheckCurrency(r.Currency); err != nil {
		problems = append(problems, err.Error())
	}
	if r.Quorum == 0 {
		r.Quorum = 1
	}
	if r.Quorum < 0 {
		problems = append(problems, fmt.Sprintf("quorum %d must be at least 1", r.Quorum))
	} else if eligible := s.eligibleApprovers(*r); r.Quorum > eligible {
		problems = append(problems, fmt.Sprintf("quorum %d cannot be met: %d configured approver(s) may vote on a request of agent %q owned by %q", r.Quorum, eligible, r.Agent, r.Owner))
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	r.CreatedAt = r.CreatedAt.UTC()
	if r.ExpiresAt.IsZero() {
		problems = append(problems, "expires_at is required")
	} else if !r.ExpiresAt.After(now) {
		problems = append(problems, fmt.Sprintf("expires_at %s is not in the future (now %s)", r.ExpiresAt.UTC().Format(time.RFC3339), now.Format(time.RFC3339)))
	}
	r.ExpiresAt = r.ExpiresAt.UTC()
	if len(problems) > 0 {
		return fmt.Errorf("%w: approval request: %s", ErrInvalidInput, strings.Join(problems, "; "))
	}
	if r.AmountText == "" {
		r.AmountText = money.FormatMicros(r.AmountMicros, r.Currency)
	}
	r.State = StatePending
	r.Consumed = false
	r.ConsumedAt = time.Time{}
	r.DecidedReason = ""
	r.DecidedAt = time.Time{}
	r.Votes = nil
	r.ResultText = ""
	return nil
}

// eligibleApprovers counts configured approvers who are neither the agent nor its owner.
func (s *Service) eligibleApprovers(r Request) int {
	n := 0
	for _, a := range s.o.Approvers {
		if !isSelf(a, r) {
			n++
		}
	}
	return n
}

// isSelf is the hard self-approval rule: the agent's owner (and an approver who
// shares the agent's name) never decides the agent's request, whatever the policy says.
func isSelf(a Approver, r Request) bool {
	return (r.Owner != "" && strings.EqualFold(a.Name, r.Owner)) || strings.EqualFold(a.Name, r.Agent)
}

// Request persists r as pending and audits approval.requested in the same
// transaction, then posts it to every channel (AddChannel). A failed post
// leaves the request pending; Run retries it with backoff until it succeeds or
// the request leaves pending. A second call for the same operation with the
// same binding returns the stored request; a different binding is
// ErrBindingMismatch.
func (s *Service) Request(ctx context.Context, r Request) (Request, error) {
	now := s.now()
	if err := s.validateNew(&r, now); err != nil {
		return Request{}, err
	}
	existing, err := s.insertRequest(ctx, r)
	if err != nil {
		return Request{}, err
	}
	if existing != nil {
		if existing.ArgsHash != r.ArgsHash || existing.AmountMicros != r.AmountMicros || existing.Currency != r.Currency {
			return Request{}, fmt.Errorf("request approval for operation %s: %w: an approval request with other arguments or amount exists (%s)", r.OperationID, ErrBindingMismatch, existing.ID)
		}
		return *existing, nil
	}
	s.syncRequest(ctx, r.ID)
	if got, err := s.loadRequest(ctx, s.st, r.ID); err == nil {
		r = got
	}
	return r, nil
}

// insertRequest writes r and its audit event, or returns the request that already
// exists for the operation.
func (s *Service) insertRequest(ctx context.Context, r Request) (*Request, error) {
	argsJSON, moduleJSON, headroomJSON, err := encodeRequestJSON(r)
	if err != nil {
		return nil, fmt.Errorf("request approval: %w", err)
	}
	var existing *Request
	err = s.st.Write(ctx, func(tx *store.Tx) error {
		var id string
		switch err := tx.QueryRowContext(ctx, `SELECT id FROM approval_requests WHERE operation_id = ?`, r.OperationID).Scan(&id); {
		case err == nil:
			got, err := s.loadRequest(ctx, tx, id)
			if err != nil {
				return err
			}
			existing = &got
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up operation: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO approval_requests (
			id, operation_id, tool, agent, team, owner, client, summary, args_json, module_json,
			amount_micros, currency, amount_text, headroom_json, reason, policy, args_hash,
			irreversible, quorum, state, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.OperationID, r.Tool, r.Agent, r.Team, r.Owner, r.Client, r.Summary, argsJSON, moduleJSON,
			r.AmountMicros, r.Currency, r.AmountText, headroomJSON, r.Reason, r.Policy, r.ArgsHash,
			boolInt(r.Irreversible), r.Quorum, StatePending, r.CreatedAt.UnixNano(), r.ExpiresAt.UnixNano())
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		for _, c := range s.channelList() {
			if _, err := tx.ExecContext(ctx, `INSERT INTO approval_posts (request_id, channel) VALUES (?, ?)`, r.ID, c.Name()); err != nil {
				return fmt.Errorf("insert post of %s: %w", c.Name(), err)
			}
		}
		return s.o.Audit(ctx, tx, EventRequested, "agent:"+r.Agent, r.OperationID, map[string]any{
			"request_id":    r.ID,
			"tool":          r.Tool,
			"agent":         r.Agent,
			"team":          r.Team,
			"owner":         r.Owner,
			"client":        r.Client,
			"summary":       r.Summary,
			"args_hash":     r.ArgsHash,
			"amount_micros": r.AmountMicros,
			"currency":      r.Currency,
			"quorum":        r.Quorum,
			"irreversible":  r.Irreversible,
			"expires_at":    r.ExpiresAt.Format(time.RFC3339Nano),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("request approval for operation %s: %w", r.OperationID, err)
	}
	return existing, nil
}

// Get returns one request with its votes.
func (s *Service) Get(ctx context.Context, id string) (Request, error) {
	r, err := s.loadRequest(ctx, s.st, id)
	if err != nil {
		return Request{}, fmt.Errorf("get approval %s: %w", id, err)
	}
	return r, nil
}

// ByOperation returns the request of an operation.
func (s *Service) ByOperation(ctx context.Context, operationID string) (Request, error) {
	var id string
	err := s.st.QueryRowContext(ctx, `SELECT id FROM approval_requests WHERE operation_id = ?`, operationID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, fmt.Errorf("approval for operation %s: %w", operationID, ErrNotFound)
	}
	if err != nil {
		return Request{}, fmt.Errorf("approval for operation %s: %w", operationID, err)
	}
	return s.Get(ctx, id)
}

// List returns the requests in the given states (all states when none), newest first.
func (s *Service) List(ctx context.Context, states ...string) ([]Request, error) {
	return s.list(ctx, 0, states)
}

// Recent returns at most limit requests in the given states (all states when
// none), newest first.
func (s *Service) Recent(ctx context.Context, limit int, states ...string) ([]Request, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: list approvals: limit %d must be at least 1", ErrInvalidInput, limit)
	}
	return s.list(ctx, limit, states)
}

func (s *Service) list(ctx context.Context, limit int, states []string) ([]Request, error) {
	q := `SELECT ` + requestColumns + ` FROM approval_requests`
	var args []any
	if len(states) > 0 {
		marks := make([]string, len(states))
		for i, st := range states {
			if !validState(st) {
				return nil, fmt.Errorf("%w: list approvals: unknown state %q; states are pending, approved, denied, expired, cancelled", ErrInvalidInput, st)
			}
			marks[i] = "?"
			args = append(args, st)
		}
		q += ` WHERE state IN (` + strings.Join(marks, ",") + `)`
	}
	q += ` ORDER BY created_at DESC, id`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.st.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	var out []Request
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list approvals: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	// Votes are read after the request rows are closed (the write handle has a
	// single connection, and a second query while rows are open would wait
	// forever), in one query per page of requests rather than one per request.
	for start := 0; start < len(out); start += votesPerQuery {
		page := out[start:min(start+votesPerQuery, len(out))]
		ids := make([]any, len(page))
		at := make(map[string]*Request, len(page))
		for i := range page {
			ids[i] = page[i].ID
			at[page[i].ID] = &page[i]
		}
		rows, err := s.st.QueryContext(ctx, `SELECT request_id, `+voteColumns+` FROM approval_votes
			WHERE request_id IN (`+store.Placeholders(len(ids))+`) ORDER BY at, seq`, ids...)
		if err != nil {
			return nil, fmt.Errorf("list approvals: read votes: %w", err)
		}
		for rows.Next() {
			var id string
			v, err := scanVote(rows, &id)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("list approvals: %w", err)
			}
			at[id].Votes = append(at[id].Votes, v)
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("list approvals: read votes: %w", err)
		}
	}
	return out, nil
}

// votesPerQuery bounds the ids of one votes query (SQLite allows 32766
// parameters; PostgreSQL 65535).
const votesPerQuery = 500

func validState(st string) bool {
	switch st {
	case StatePending, StateApproved, StateDenied, StateExpired, StateCancelled:
		return true
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
