// Package server is tollgate's MCP server: the transports (stdio, streamable
// HTTP, SSE), principal resolution, the HTTP routes, and the pipeline that
// carries every tool call through policy, budget, approval and execution.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/approvals"
	slackchan "github.com/tollgatehq/tollgate/approvals/slack"
	"github.com/tollgatehq/tollgate/approvals/web"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/ledger/store"
	"github.com/tollgatehq/tollgate/tools"
)

// Deps are the running parts the server wires together.
type Deps struct {
	DB    *ledger.DB
	Authz *authz.Client
	// Cloudflare configures the token broker (real account or sandbox); the
	// server adds its own request observer for audit and metrics.
	Cloudflare cloudflare.Config
	// Slack is the Web API client for approval messages; nil means no Slack
	// (the local CLI approver still works).
	Slack *slack.Client
	// SlackSigningSecret verifies POST /slack/interactions.
	SlackSigningSecret string
	Logger             *slog.Logger
	Clock              func() time.Time
	Version            string
	// PolicyDir is the policy folder the managed PDP serves, whose guardrail
	// constants tollgate://policies puts in words; empty for an external PDP.
	PolicyDir string
	// Sandbox says Cloudflare is tollgate's built-in sandbox, where nothing is
	// billed: agents reach the policy with P.attr.sandbox true.
	Sandbox bool
	// Terminal, when set, gets one line per approval requested, decided,
	// withdrawn or executed (serve's stderr); nil prints nothing.
	Terminal io.Writer
}

// Server is a running tollgate.
type Server struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	mcp       *mcpserver.MCPServer
	pipe      *Pipeline
	broker    *cloudflare.Broker
	approvals *approvals.Service
	slack     *slackchan.Channel // Slack clicks; posts only when a client and channel are configured
	console   *web.Console       // /console/ on the HTTP listener
	metrics   *metrics
	notify    *notifier
	subs      *subscriptions
	audit     *checkpointer

	// sessions maps an MCP session id to the agent that opened it, so a
	// session cannot be driven with another agent's token, and counts each
	// agent's open sessions.
	sessions sessionTable
	// streamable is the /mcp handler, which idle sessions are ended through.
	streamableMu sync.Mutex
	streamable   http.Handler
	sweepOnce    sync.Once
	// rejections limits how many refused bearer tokens are audited.
	rejections rateLimit
	// sessionRefusals limits how many requests on another agent's session
	// are audited.
	sessionRefusals rateLimit
	// inFlight counts each agent's MCP requests being handled.
	inFlight inFlight
	// sseInFlight holds the slots of requests answered on SSE streams.
	sseInFlight sseInFlight

	lease     *store.Lease       // this process's lease, held from Start to Close
	stopLoops context.CancelFunc // background loops: stopped first on Close
	loops     context.Context
	stop      context.CancelFunc // the pipelines' lifetime: cancelled last
	loopDone  sync.WaitGroup
	// approversChecked is closed once start-up's quorum check has said its piece.
	approversChecked chan struct{}
}

// New builds a server from a validated config and its parts.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.DB == nil || d.Authz == nil {
		return nil, errors.New("server: ledger and policy engine are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = func() time.Time { return time.Now().UTC() }
	}
	s := &Server{cfg: cfg, deps: d, log: d.Logger, approversChecked: make(chan struct{})}

	book, err := cfg.Pricing.Workers.book()
	if err != nil {
		return nil, err
	}
	var quorum []quorumRule
	for _, q := range cfg.Approvals.Quorum {
		above, _ := money.ParseMoney(q.Above, orUSD(q.Currency))
		quorum = append(quorum, quorumRule{above: above, approvers: q.Approvers})
	}

	cfCfg := d.Cloudflare
	cfCfg.Logger = d.Logger.With("subsystem", "cloudflare")
	if cfCfg.TokenTTL == 0 {
		cfCfg.TokenTTL = cfg.Cloudflare.TokenTTL
	}
	cfCfg.Observer = s.observeCloudflare
	if cfCfg.OnRotation == nil {
		cfCfg.OnRotation = AuditRotation(d.DB, "system")
	}
	if s.broker, err = cloudflare.NewBroker(cfCfg); err != nil {
		return nil, fmt.Errorf("cloudflare: %w", err)
	}
	s.metrics = newMetrics(d.DB, s.broker, d.Authz)
	toolsCfg := tools.Config{Workers: book, QuoteTTL: tools.DefaultQuoteTTL}
	s.notify = newNotifier()

	life, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.loops, s.stopLoops = context.WithCancel(life)
	s.pipe = &Pipeline{
		db: d.DB, authz: d.Authz, broker: s.broker, cfg: cfg, quorum: quorum, sandbox: d.Sandbox,
		muts:       tools.Mutations(toolsCfg),
		log:        d.Logger.With("subsystem", "pipeline"),
		now:        d.Clock,
		metrics:    s.metrics,
		watch:      newWatcher(),
		notify:     s.notify,
		life:       life,
		quotes:     quoteLimiter{perMinute: cfg.QuotesPerMinute},
		quoteCache: newQuoteCache(toolsCfg.QuoteTTL),
		term:       newTerminal(d.Terminal, cfg.ConsoleBase(), d.Clock),
	}
	s.pipe.quoteSession, err = s.broker.Shared(cloudflare.PurposeQuote, sharedQuoteHooks(d.DB, cfg.Cloudflare.RequestIP, s.pipe.log.Error))
	if err == nil {
		s.pipe.inspectSession, err = s.broker.Shared(cloudflare.PurposeInspect, sharedQuoteHooks(d.DB, cfg.Cloudflare.RequestIP, s.pipe.log.Error))
	}
	if err != nil {
		return nil, err
	}

	s.approvals, err = NewApprovals(d.DB, d.Authz, cfg, ApprovalHooks{
		Logger:    d.Logger.With("subsystem", "approvals"),
		Clock:     d.Clock,
		OnDecided: s.pipe.onDecided,
		OnExpired: s.pipe.onDecided,
		OnFreeze: func(ctx context.Context, agent string, by approvals.Approver, via string) error {
			_, err := Freeze(ctx, d.DB, s.approvals, ledger.AgentScope(agent), "frozen from "+approvals.ViaLabel(via)+" by "+by.Name, via+":"+by.Name)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	slackCfg := slackchan.Config{
		SigningSecret: d.SlackSigningSecret,
		// The message's "expires in" must count on the clock that expires it.
		Clock:  d.Clock,
		Logger: d.Logger.With("subsystem", "approvals"),
	}
	if cfg.Console.PublicURL != "" {
		// Review in console: a Slack-verified click gets a fresh one-time
		// link for the clicking approver, shown to them alone.
		slackCfg.ConsoleLink = func(ctx context.Context, approver, requestID, slackUser string) (string, time.Time, error) {
			l, err := web.MintLink(ctx, s.approvals, cfg.ConsoleBase(), approver, "/console/approvals/"+requestID, "slack:"+slackUser, cfg.Console.LinkTTL)
			return l.URL, l.ExpiresAt, err
		}
	}
	if d.Slack != nil && cfg.Slack.Channel != "" {
		slackCfg.Client, slackCfg.Channel = d.Slack, cfg.Slack.Channel
	}
	s.slack = slackchan.New(s.approvals, slackCfg)
	if s.slack.Posts() {
		s.approvals.AddChannel(s.slack)
	}
	s.pipe.approvals = s.approvals
	s.console, err = web.New(s.approvals, web.Config{
		Source: newConsoleSource(s), BaseURL: cfg.Console.PublicURL,
		LinkTTL: cfg.Console.LinkTTL, SessionTTL: cfg.Console.SessionTTL,
		Logger: d.Logger.With("subsystem", "console"),
	})
	if err != nil {
		return nil, err
	}
	s.audit = &checkpointer{
		db:     d.DB,
		policy: ledger.CheckpointPolicy{Events: cfg.Audit.CheckpointEvents, Interval: cfg.Audit.CheckpointInterval},
		file:   cfg.Audit.CheckpointFile,
		alert:  s.pipe.alert,
		log:    d.Logger.With("subsystem", "audit"),
	}

	tasks := newTaskWindows(d.DB, d.Logger.With("subsystem", "tasks"))
	hooks := &mcpserver.Hooks{}
	tasks.addHooks(hooks)
	s.bindSessions(hooks)
	s.notify.addHooks(hooks)
	s.addSubscriptionHooks(hooks)
	s.mcp = mcpserver.NewMCPServer("tollgate", d.Version,
		mcpserver.WithTitle("tollgate: guarded Cloudflare provisioning"),
		mcpserver.WithInstructions(instructions),
		mcpserver.WithToolCapabilities(false),
		mcpserver.WithResourceCapabilities(true, false),
		mcpserver.WithTaskCapabilities(true, true, true),
		mcpserver.WithLogging(),
		mcpserver.WithHooks(hooks),
		mcpserver.WithRecovery(),
		mcpserver.WithResourceRecovery(),
		// Outermost, so a task call is detached from its request before
		// anything (the audit included) runs on it.
		mcpserver.WithToolHandlerMiddleware(tasks.detach(life)),
		mcpserver.WithToolHandlerMiddleware(s.auditCalls),
	)
	s.notify.mcp = s.mcp
	s.mcp.AddTools(tools.All(s.pipe, toolsCfg)...)
	s.addResources()
	s.pipe.elicit = s.elicitApproval
	return s, nil
}

const instructions = `tollgate gives you guarded access to Cloudflare: check_domain, estimate_cost, list_domains and list_workers are free and read-only; ` +
	`register_domain, deploy_worker (with an optional gradual rollout), attach_worker_domain, detach_worker_domain and rollback_worker ` +
	`spend money or change production, are checked against policy and budgets, and ` +
	`irreversible ones wait for a human approver. Always give a specific reason. If a call returns status ` +
	`awaiting_approval, resume with get_operation (wait_seconds up to 50) instead of calling again with new arguments.`

// MCP is the underlying MCP server (for in-process clients).
func (s *Server) MCP() *mcpserver.MCPServer { return s.mcp }

// Pipeline returns the pipeline (for tests and benchmarks).
func (s *Server) Pipeline() *Pipeline { return s.pipe }

// Approvals returns the approvals service.
func (s *Server) Approvals() *approvals.Service { return s.approvals }

// Slack returns the Slack channel of the approvals (its clicks arrive on
// Handler's /slack/interactions, or through its RunSocketMode).
func (s *Server) Slack() *slackchan.Channel { return s.slack }

// Start registers this process's lease, takes over the work of processes
// that are gone, and starts the background loops: approval expiry and Slack
// retries, decisions and changes made by other processes, reclaiming, in_doubt
// reconciliation. Any number of servers and CLI commands may share the
// database.
func (s *Server) Start(ctx context.Context) error {
	lease, err := s.deps.DB.StartLease(ctx)
	if err != nil {
		return err
	}
	s.lease = lease
	if err := s.broker.SetOwner(lease.ID()); err != nil {
		return err
	}
	if err := s.applyConfig(ctx); err != nil {
		return err
	}
	if err := s.logBudgets(ctx); err != nil {
		return err
	}
	if err := s.approvals.PublishApprovers(ctx); err != nil {
		return err
	}
	// A server without a listener (stdio) has no console to offer, but
	// another server on the database may: leave its address for
	// `approvals open` rather than withdraw it.
	if base := s.cfg.ConsoleBase(); base != "" {
		if err := web.PublishBase(ctx, s.deps.DB.Store(), base, s.deps.Clock()); err != nil {
			return err
		}
	}
	if err := s.pipe.reclaim(ctx, true); err != nil {
		return err
	}
	run := func(name string, fn func(context.Context) error) {
		s.loopDone.Add(1)
		go func() {
			defer s.loopDone.Done()
			if err := fn(s.loops); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("background loop stopped", "loop", name, "err", err)
			}
		}()
	}
	// Who approves is said at start; whether they can meet every quorum
	// takes policy calls, so it is said once they answered, without
	// delaying the start.
	run("approver check", func(ctx context.Context) error {
		defer close(s.approversChecked)
		s.logApprovers(ctx)
		return nil
	})
	run("approvals", s.approvals.Run)
	run("pipeline", func(ctx context.Context) error { s.pipe.loop(ctx, time.Second); return nil })
	run("parent token rotation", func(ctx context.Context) error {
		s.broker.RunRotation(ctx, s.cfg.Cloudflare.RotateEvery, time.Hour)
		return nil
	})
	run("audit checkpoints", func(ctx context.Context) error { s.audit.loop(ctx, 5*time.Second); return nil })
	run("watch", func(ctx context.Context) error { s.pipe.watch.run(ctx, s.deps.DB, s.log); return nil })
	return nil
}

// Close stops the background loops, gives running pipelines up to 10 s to
// finish (an execution in flight should settle, not be cut off), then
// cancels what is left. Every step is written down, so anything interrupted
// is recovered on the next start.
func (s *Server) Close() {
	s.stopLoops()
	s.loopDone.Wait()
	done := make(chan struct{})
	go func() { s.pipe.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.log.Warn("pipelines still running at shutdown; start-up recovery will finish them")
	}
	// The shared quote token is revoked now rather than left to expire.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s.pipe.quoteSession.Close(ctx)
	s.pipe.inspectSession.Close(ctx)
	cancel()
	s.stop()
	if s.lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.lease.Close(ctx); err != nil {
			s.log.Warn("lease not ended; another process will take over what it still holds once it is found dead", "err", err)
		}
	}
}

// applyConfig writes configured budgets and limits into the ledger, auditing
// only what changed.
func (s *Server) applyConfig(ctx context.Context) error {
	existing, err := s.deps.DB.Budgets(ctx)
	if err != nil {
		return fmt.Errorf("read budgets: %w", err)
	}
	for _, bc := range s.cfg.Budgets {
		b, _ := bc.Budget()
		same := false
		for _, e := range existing {
			if e.Scope == b.Scope && e.Window == b.Window && (e.Limit == b.Limit || bc.embedded) {
				same = true
			}
		}
		if !same {
			if err := s.deps.DB.SetBudget(ctx, b, "config"); err != nil {
				return fmt.Errorf("apply budget %s %s: %w", b.Scope, b.Window, err)
			}
		}
	}
	limits, err := s.deps.DB.Limits(ctx)
	if err != nil {
		return fmt.Errorf("read limits: %w", err)
	}
	for _, lc := range s.cfg.Limits {
		l, _ := lc.VelocityLimit()
		same := false
		for _, e := range limits {
			if e == l {
				same = true
			}
		}
		if !same {
			if err := s.deps.DB.SetLimit(ctx, l, "config"); err != nil {
				return fmt.Errorf("apply limit: %w", err)
			}
		}
	}
	return nil
}

// logBudgets writes the budgets in force at start, so whoever starts
// tollgate sees what limits its spending (or that nothing does).
func (s *Server) logBudgets(ctx context.Context) error {
	sts, err := s.deps.DB.BudgetStatuses(ctx)
	if err != nil {
		return fmt.Errorf("read budgets: %w", err)
	}
	if len(sts) == 0 {
		s.log.Warn("no budget in force: spending is limited only by policy; set one with tollgate budget set --scope global --window day --limit 50.00")
	}
	for _, st := range sts {
		s.log.Info("budget in force", "scope", string(st.Budget.Scope), "window", string(st.Budget.Window),
			"limit", st.Budget.Limit.String(), "spent", st.Spent.String(), "held", st.Held.String(), "remaining", st.Remaining.String())
	}
	return nil
}

// ServeStdio serves one MCP session on in/out as the configured agent.
// Logs never go to out: it belongs to the protocol.
func (s *Server) ServeStdio(ctx context.Context, in io.Reader, out io.Writer) error {
	a, ok := s.cfg.agent(s.cfg.Agent)
	if !ok {
		return fmt.Errorf("agent %q is not configured", s.cfg.Agent)
	}
	p := principalFromConfig(a, "stdio")
	srv := mcpserver.NewStdioServer(s.mcp)
	srv.SetErrorLogger(log.New(slogWriter{s.log}, "", 0))
	// The principal is on the session's context from the start, so the
	// session is known as this agent's (notifications/message reach it).
	ctx = WithPrincipal(ctx, p)
	srv.SetContextFunc(func(ctx context.Context) context.Context { return WithPrincipal(ctx, p) })
	return srv.Listen(ctx, in, out)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Warn("mcp stdio", "msg", string(b))
	return len(b), nil
}

// observeCloudflare records every Cloudflare request in the audit trail and
// metrics: in the journal of the call or execution that made it, when there
// is one (it commits with that work's next ledger write), at once otherwise.
// An audit failure fails the request (closed).
func (s *Server) observeCloudflare(ctx context.Context, r cloudflare.RequestRecord) error {
	s.metrics.observeCloudflare(r)
	opID := operationFrom(ctx) // a price check made while planning an operation
	if len(r.Label) > 3 && r.Label[:3] == "op_" {
		opID = r.Label
	}
	return s.deps.DB.Record(ctx, ledger.NewEvent("cloudflare.request", "system", opID, map[string]any{
		"method": r.Method, "path": r.Path, "status": r.Status, "cf_ray": r.CFRay,
		"purpose": string(r.Purpose), "token_id": r.TokenID, "duration_ms": r.Duration.Milliseconds(), "error": r.Err,
	}))
}

// Audit event types of parent token rotations.
const (
	EventParentRotated        = "cloudflare.parent_rotated"
	EventParentRotationFailed = "cloudflare.parent_rotation_failed"
)

// AuditRotation records each rotation of the Cloudflare parent token in
// the audit trail (token id, where the value lives, scheduled or not, the
// error; never the value), as actor.
func AuditRotation(db *ledger.DB, actor string) func(context.Context, cloudflare.Rotation) error {
	return func(ctx context.Context, r cloudflare.Rotation) error {
		typ := EventParentRotated
		if r.Err != "" {
			typ = EventParentRotationFailed
		}
		return db.Append(ctx, ledger.NewEvent(typ, actor, "", map[string]any{
			"token_id": r.TokenID, "source": r.Source, "scheduled": r.Scheduled, "error": r.Err,
		}))
	}
}

// auditCalls records every tool call and its outcome, and counts them. If
// the call cannot be recorded it is refused: no action without a record.
//
// The call's records (received, the policy decisions of read-only checks,
// the Cloudflare requests of a price check, the result) wait in the call's
// journal: a mutating call's first ledger write (CreateOperation) commits
// them with the Operation, and whatever is left commits in one transaction
// when the call ends, before its answer leaves. A read-only call whose
// records cannot be written is answered with a refusal, not its result.
func (s *Server) auditCalls(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		pr, ok := principalFrom(ctx)
		if !ok {
			s.metrics.observeTool(req.Params.Name, "refused")
			return mcp.NewToolResultError("no agent identity on this session; refusing"), nil
		}
		ci := clientInfo(ctx, pr.Transport)
		ctx, _ = ledger.WithJournal(ctx)
		err := s.deps.DB.Store().Health(ctx)
		if err == nil {
			err = s.deps.DB.Record(ctx, ledger.NewEvent("call.received", pr.actor(), "", map[string]any{
				"tool": req.Params.Name, "args": redactArgs(req), "client": ci, "team": pr.Team,
			}))
		}
		if err != nil {
			s.log.Error("audit append failed; refusing call", "tool", req.Params.Name, "err", err)
			s.metrics.observeTool(req.Params.Name, "refused")
			if errors.Is(err, store.ErrUnhealthy) {
				// Not a passing fault: say what a human must fix.
				return mcp.NewToolResultError("tollgate refuses to act: " + err.Error()), nil
			}
			return mcp.NewToolResultError("the audit trail is unavailable, so tollgate refuses to act; try again later"), nil
		}
		start := time.Now()
		untrack := s.notify.track(ctx, pr.Name)
		res, err := next(ctx, req)
		untrack()
		outcome := "ok"
		data := map[string]any{"tool": req.Params.Name}
		switch {
		case err != nil:
			outcome = "error"
			data["error"] = err.Error()
		case res != nil && res.IsError:
			outcome = "refused"
			data["error"] = resultText(res)
		}
		data["outcome"] = outcome
		aerr := s.deps.DB.Record(ctx, ledger.NewEvent("call.result", pr.actor(), "", data))
		if aerr == nil {
			aerr = s.deps.DB.Flush(context.WithoutCancel(ctx))
		}
		if aerr != nil {
			s.log.Error("audit append failed", "tool", req.Params.Name, "err", aerr)
			if _, mutated := operationOf(res); !mutated {
				// Nothing this call did is on record: its answer must not
				// leave either. (An Operation's own records committed with
				// its state changes; the agent must learn its id.)
				outcome, res, err = "refused", mcp.NewToolResultError("the audit trail is unavailable, so tollgate refuses to answer; try again later"), nil
			}
		}
		s.metrics.observeTool(req.Params.Name, outcome)
		if !s.log.Enabled(ctx, slog.LevelInfo) {
			return res, err
		}
		// One line per call, for the person reading the server's log.
		attrs := []slog.Attr{
			slog.String("agent", pr.Name), slog.String("tool", req.Params.Name), slog.String("outcome", outcome),
		}
		if v, ok := operationOf(res); ok {
			attrs = append(attrs, slog.String("operation", v.OperationID), slog.String("status", v.Status))
		}
		attrs = append(attrs, slog.Int64("ms", time.Since(start).Milliseconds()))
		if outcome != "ok" {
			attrs = append(attrs, slog.String("error", firstLine(fmt.Sprint(data["error"]))))
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "tool call", attrs...)
		return res, err
	}
}

// operationOf is the Operation a tool result carries, if any.
func operationOf(res *mcp.CallToolResult) (tools.OperationView, bool) {
	if res == nil {
		return tools.OperationView{}, false
	}
	v, ok := res.StructuredContent.(tools.OperationView)
	return v, ok && v.OperationID != ""
}

// firstLine is the first line of s, capped for a log line.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(mcp.TextContent); ok {
			if len(t.Text) > 500 {
				return t.Text[:500] + "…"
			}
			return t.Text
		}
	}
	return ""
}

// redactArgs is the call's arguments for the audit trail: a Worker module is
// replaced by its size (the Operation records its sha256), long strings are cut.
func redactArgs(req mcp.CallToolRequest) any {
	var m map[string]any
	raw := req.Params.RawArguments
	if len(raw) == 0 {
		b, _ := json.Marshal(req.Params.Arguments)
		raw = b
	}
	if json.Unmarshal(raw, &m) != nil {
		return map[string]any{"unparsable_bytes": len(raw)}
	}
	var walk func(map[string]any)
	walk = func(m map[string]any) {
		for k, v := range m {
			switch t := v.(type) {
			case string:
				if k == "module" {
					m[k] = fmt.Sprintf("<module: %d bytes>", len(t))
				} else if len(t) > 600 {
					m[k] = t[:600] + "…"
				}
			case map[string]any:
				walk(t)
			}
		}
	}
	walk(m)
	return m
}
