package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgatehq/tollgate/approvals/web"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
	"github.com/tollgatehq/tollgate/tools"
)

// Config is tollgate.yaml. Every field has a working default (Default), so
// the file is optional; flags and TOLLGATE_* variables override it.
type Config struct {
	// Listen is the HTTP listener address for the http and sse transports.
	Listen string `yaml:"listen"`
	// Transport is stdio, http (streamable HTTP on /mcp plus SSE on /sse) or sse (SSE only).
	Transport string `yaml:"transport"`
	// DB is the database: a SQLite file path, or a postgres:// (or
	// postgresql://) URL for several replicas on one PostgreSQL database.
	DB string `yaml:"db"`
	// LeaseTTL is how long a replica on PostgreSQL may miss heartbeats before
	// another takes its unfinished work over (default 30s). On SQLite a lease
	// dies with its process, whatever this says.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Agent is the agent stdio sessions act as (and HTTP sessions when Auth is none).
	Agent string `yaml:"agent"`
	// Auth is tokens (HTTP needs an agent bearer token) or none (HTTP acts as
	// Agent; only on a loopback listener or behind TLS).
	Auth string `yaml:"auth"`
	// TLS serves HTTPS from these PEM files when both are set.
	TLS TLSConfig `yaml:"tls"`
	// AllowedHosts are extra Host/Origin names accepted besides the listener
	// address and loopback names (DNS rebinding protection).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// Cerbos selects the policy engine.
	Cerbos CerbosConfig `yaml:"cerbos"`
	// Cloudflare selects the Cloudflare account or the built-in sandbox.
	Cloudflare CloudflareConfig `yaml:"cloudflare"`
	// Agents are the principals tollgate knows from config.
	Agents []AgentConfig `yaml:"agents"`
	// Approvers are the humans who may approve, mapped from Slack ids and OS users.
	Approvers []ApproverConfig `yaml:"approvers"`
	// Approvals tunes waiting, expiry and quorum.
	Approvals ApprovalsConfig `yaml:"approvals"`
	// Slack is where approval requests are posted (tokens come from the environment).
	Slack SlackConfig `yaml:"slack"`
	// Console is the approvers' web console at /console/ on the HTTP listener.
	Console ConsoleConfig `yaml:"console"`
	// Budgets are applied to the ledger at start (the CLI can change them later).
	Budgets []BudgetConfig `yaml:"budgets"`
	// Limits are velocity limits applied at start.
	Limits []LimitConfig `yaml:"limits"`
	// Pricing is the price book for what has no live quote.
	Pricing PricingConfig `yaml:"pricing"`
	// AutoFreeze freezes an agent after Blocks budget blocks within Within.
	AutoFreeze AutoFreezeConfig `yaml:"auto_freeze"`
	// Audit keys the audit trail and says where signed checkpoints go.
	Audit AuditConfig `yaml:"audit"`
	// HTTP bounds what one request or agent may hold of the listener.
	HTTP HTTPConfig `yaml:"http"`
	// QuotesPerMinute caps each agent's registrar price checks (check_domain,
	// estimate_cost and planning): each mints a token and calls Cloudflare, and
	// a runaway agent must not use up the account's API rate limit. 0 = no cap.
	QuotesPerMinute int `yaml:"quotes_per_minute"`
}

// TLSConfig names the certificate and key for HTTPS.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA requires client certificates signed by this CA (PEM): the only
	// way to serve auth none beyond loopback, since TLS alone says nothing
	// about who connects.
	ClientCA string `yaml:"client_ca"`
}

// HTTPConfig bounds the HTTP listener, so one agent (or anyone who can
// connect) cannot take the server's memory, connections or workers.
type HTTPConfig struct {
	// MaxBodyBytes caps a request body on /mcp and /message; a larger one is
	// answered 413 before the rest is read. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// BodyReadTimeout bounds reading a request's body, from its headers on;
	// a long-lived response (a GET stream, a call waiting for a human) is not
	// bounded by it.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout"`
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxInFlightPerAgent caps one agent's MCP requests being handled at
	// once (POSTs on /mcp and /message, until answered); more get 429. GET
	// streams are not counted. 0 means no cap.
	MaxInFlightPerAgent int64 `yaml:"max_in_flight_per_agent"`
	// MaxSessionsPerAgent caps the MCP sessions one agent holds open at once
	// (streamable HTTP and SSE); a request opening one more gets 429. 0 means
	// no cap.
	MaxSessionsPerAgent int64 `yaml:"max_sessions_per_agent"`
	// SessionIdleTimeout ends a streamable HTTP session no request has used
	// this long, unless a request is in flight in it or a GET stream of it
	// is open. 0 means sessions end only on DELETE.
	SessionIdleTimeout time.Duration `yaml:"session_idle_timeout"`
}

// DefaultMaxBodyBytes is the default body cap: a deploy_worker call carries
// a module of at most tools.MaxModuleBytes as a JSON string, where quotes,
// backslashes and newlines (and, from encoders that escape non-ASCII,
// most other characters) take two bytes, plus 1 MiB for everything else.
const DefaultMaxBodyBytes = 2*tools.MaxModuleBytes + 1<<20

// maxBody is the effective body cap.
func (h HTTPConfig) maxBody() int64 {
	if h.MaxBodyBytes == 0 {
		return DefaultMaxBodyBytes
	}
	return h.MaxBodyBytes
}

// CerbosConfig selects the PDP: a managed local one (Addr empty) or an external one.
type CerbosConfig struct {
	// Addr is host:port or unix:/path of an external PDP; empty starts the managed PDP.
	Addr string `yaml:"addr"`
	// Policies is the policy folder for the managed PDP.
	Policies string `yaml:"policies"`
	// TLSCA is the CA file for an external PDP over TLS; empty with Plaintext false uses system roots.
	TLSCA string `yaml:"tls_ca"`
	// Plaintext connects to an external TCP PDP without TLS.
	Plaintext bool `yaml:"plaintext"`
	// Timeout bounds each decision.
	Timeout time.Duration `yaml:"timeout"`
	// MetricsAddr is an external PDP's HTTP listener ("http://host:3592",
	// "https://host:3592" or "unix:/path/http.sock") whose /_cerbos/metrics
	// tell tollgate when that PDP reloaded its policies; with Policies
	// naming the folder it serves, decisions of the external PDP are cached
	// too. Empty: an external PDP's decisions are not cached. The managed
	// PDP needs nothing here.
	MetricsAddr string `yaml:"metrics_addr"`
	// DecisionCache bounds the decision cache.
	DecisionCache DecisionCacheConfig `yaml:"decision_cache"`
}

// DecisionCacheConfig bounds the cache of policy decisions (see
// authz.WithDecisionCache): a decision is reused only under the policy
// generation it was made under, for exactly what the policies read.
type DecisionCacheConfig struct {
	// Size is how many decisions are kept; 0 turns the cache off.
	Size int `yaml:"size"`
	// TTL is how long one is kept at most.
	TTL time.Duration `yaml:"ttl"`
}

// CloudflareConfig selects the account; credentials come only from the environment.
type CloudflareConfig struct {
	// Sandbox forces the built-in emulator even when credentials are set.
	Sandbox bool `yaml:"sandbox"`
	// APIBase overrides the API URL (tests, proxies).
	APIBase string `yaml:"api_base"`
	// TokenTTL is the lifetime of each per-operation token.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// RequestIP pins minted tokens to this client IP (condition.request_ip).
	RequestIP string `yaml:"request_ip"`
	// RotateEvery rolls the parent token's value on schedule while serving,
	// when it comes from a file (CLOUDFLARE_API_TOKEN_FILE) or the sandbox;
	// 0 turns it off.
	RotateEvery time.Duration `yaml:"rotate_every"`
}

// AgentConfig is one agent principal.
type AgentConfig struct {
	Name  string   `yaml:"name"`
	Roles []string `yaml:"roles"`
	Team  string   `yaml:"team"`
	// Owner is the human accountable for the agent; they may never approve its requests.
	Owner string `yaml:"owner"`
	// Attributes travel to Cerbos as principal attributes (environment, trust_tier, …).
	Attributes map[string]string `yaml:"attributes"`
}

// ApproverConfig is one human approver.
type ApproverConfig struct {
	Name        string   `yaml:"name"`
	SlackUserID string   `yaml:"slack_user_id"`
	OSUser      string   `yaml:"os_user"`
	Roles       []string `yaml:"roles"`
}

// ApprovalsConfig tunes approvals.
type ApprovalsConfig struct {
	// Wait is how long a tool call blocks for a decision before returning awaiting_approval.
	Wait time.Duration `yaml:"wait"`
	// Expiry is how long a request stays open.
	Expiry time.Duration `yaml:"expiry"`
	// Quorum requires more approvers above an amount.
	Quorum []QuorumRule `yaml:"quorum"`
}

// QuorumRule requires Approvers distinct approvers for amounts above Above.
type QuorumRule struct {
	Above     string `yaml:"above"`
	Currency  string `yaml:"currency"`
	Approvers int    `yaml:"approvers"`
}

// SlackConfig is the approval channel.
type SlackConfig struct {
	Channel string `yaml:"channel"`
	// APIURL overrides the Web API base URL (tests, proxies).
	APIURL string `yaml:"api_url"`
}

// ConsoleConfig is the web console.
type ConsoleConfig struct {
	// PublicURL is the console's address as approvers' browsers reach it
	// (https://tollgate.example.com, behind TLS). It is the base of sign-in
	// links and of the links an MCP client is sent, its host is accepted in
	// Host and Origin headers, and with it Slack messages carry a Review in
	// console button. Empty: the listener's own address, and no Slack button.
	PublicURL string `yaml:"public_url"`
	// LinkTTL is how long a sign-in link stays valid (default 10m, at most 1h).
	LinkTTL time.Duration `yaml:"link_ttl"`
	// SessionTTL is how long a signed-in browser stays signed in (default 8h, at most 7 days).
	SessionTTL time.Duration `yaml:"session_ttl"`
}

// BudgetConfig is one budget.
type BudgetConfig struct {
	Scope    string `yaml:"scope"`
	Window   string `yaml:"window"`
	Limit    string `yaml:"limit"`
	Currency string `yaml:"currency"`
	// embedded marks the built-in default budget: it is written only where
	// no budget exists for its scope and window, so a limit changed with
	// `tollgate budget set` survives a restart on the defaults.
	embedded bool
}

// DefaultBudget is the budget a fresh install runs with, so that it is
// never unlimited: 50 USD a day for everything together. A tollgate.yaml
// with a budgets: list (even an empty one) replaces it.
var DefaultBudget = BudgetConfig{Scope: "global", Window: "day", Limit: "50.00", Currency: "USD", embedded: true}

// LimitConfig is one velocity limit.
type LimitConfig struct {
	Scope  string `yaml:"scope"`
	Action string `yaml:"action"`
	Window string `yaml:"window"`
	Max    int    `yaml:"max"`
}

// PricingConfig is the configured price book.
type PricingConfig struct {
	Workers WorkersPricingConfig `yaml:"workers"`
}

// WorkersPricingConfig is the Workers price book, as decimal strings.
type WorkersPricingConfig struct {
	Currency           string `yaml:"currency"`
	MonthlyPlan        string `yaml:"monthly_plan"`
	PerMillionRequests string `yaml:"per_million_requests"`
	PerMillionCPUMs    string `yaml:"per_million_cpu_ms"`
}

// AuditConfig is the audit key and the signed checkpoints of the chain.
type AuditConfig struct {
	// KeyFile holds the secret that keys the chain and signs its heads,
	// created (0600) on first start when missing. Every tollgate process on
	// one database must use the same file; keep it off the database's disk.
	// Empty means audit.key beside the config file when one is used, else
	// $XDG_CONFIG_HOME/tollgate/audit.key (~/.config/tollgate/audit.key).
	KeyFile string `yaml:"key_file"`
	// CheckpointFile receives every signed checkpoint this server makes as
	// a JSON line (append-only, 0600); `audit verify` checks the database
	// against it. Empty: checkpoints go to the database and Slack only.
	CheckpointFile string `yaml:"checkpoint_file"`
	// CheckpointEvents and CheckpointInterval: a checkpoint is signed once
	// that many events were appended since the last one, or that much time
	// passed with at least one. 0 and 0 turn checkpoints off.
	CheckpointEvents   int           `yaml:"checkpoint_events"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// AutoFreezeConfig freezes an agent after repeated budget blocks.
type AutoFreezeConfig struct {
	Blocks int           `yaml:"blocks"`
	Within time.Duration `yaml:"within"`
}

// ReservedAttributes are principal attributes tollgate sets itself; an
// agent's free-form attributes may not name them.
var ReservedAttributes = []string{"team", "owner", "transport", "client_name", "client_version", "session_id", "sandbox"}

// DefaultAgent is the agent used when nothing is configured.
const DefaultAgent = "local"

// Default is the embedded configuration: streamable HTTP on loopback, the
// sandbox, the managed PDP on ./cerbos-policies and one agent, local.
func Default() Config {
	return Config{
		Listen:    "127.0.0.1:8787",
		Transport: "http",
		DB:        "./var/tollgate.db",
		Agent:     DefaultAgent,
		Auth:      "tokens",
		Cerbos: CerbosConfig{Policies: "cerbos-policies", Timeout: 2 * time.Second,
			DecisionCache: DecisionCacheConfig{Size: 10_000, TTL: time.Minute}},
		Cloudflare: CloudflareConfig{
			TokenTTL:    5 * time.Minute,
			RotateEvery: cloudflare.DefaultRotateEvery,
		},
		// The quickstart's agent may ask for production deploys too (each
		// waits for a human, like every irreversible call).
		Agents: []AgentConfig{{Name: DefaultAgent, Roles: []string{"agent", "deployer"}, Team: "local"}},
		// Whoever runs tollgate locally approves from the CLI by default.
		Approvers: []ApproverConfig{{Name: localUser(), OSUser: localUser(), Roles: []string{"approver", "finance_approver"}}},
		Approvals: ApprovalsConfig{
			Wait:   50 * time.Second,
			Expiry: 30 * time.Minute,
		},
		Pricing: PricingConfig{Workers: WorkersPricingConfig{
			Currency: "USD", MonthlyPlan: "5.00", PerMillionRequests: "0.30", PerMillionCPUMs: "0.02",
		}},
		AutoFreeze:      AutoFreezeConfig{Blocks: 5, Within: 10 * time.Minute},
		Audit:           AuditConfig{CheckpointEvents: 1000, CheckpointInterval: 10 * time.Minute},
		QuotesPerMinute: 60,
		HTTP: HTTPConfig{
			MaxBodyBytes:        DefaultMaxBodyBytes,
			ReadHeaderTimeout:   10 * time.Second,
			BodyReadTimeout:     30 * time.Second,
			IdleTimeout:         2 * time.Minute,
			MaxHeaderBytes:      64 << 10,
			MaxInFlightPerAgent: 16,
			MaxSessionsPerAgent: 64,
			SessionIdleTimeout:  30 * time.Minute,
		},
		Budgets: []BudgetConfig{DefaultBudget},
	}
}

// localUser is the account tollgate runs as.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "local-approver"
}

// LoadFile reads a YAML config over the defaults. Unknown keys are errors.
func LoadFile(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	// Lists replace the defaults rather than merging into them; a list left
	// out (or empty) keeps the default, so a file that only adds agents still
	// has the OS user as its approver.
	cfg.Agents, cfg.Approvers = nil, nil
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(cfg.Agents) == 0 {
		cfg.Agents = Default().Agents
	}
	if len(cfg.Approvers) == 0 {
		cfg.Approvers = Default().Approvers
	}
	return cfg, nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.Transport {
	case "stdio", "http", "sse":
	default:
		add("transport %q: use stdio, http or sse", c.Transport)
	}
	if c.Transport != "stdio" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			add("listen %q: want host:port (%v)", c.Listen, err)
		}
	}
	switch c.Auth {
	case "tokens", "none":
	default:
		add("auth %q: use tokens or none", c.Auth)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("tls: set both cert and key, or neither")
	}
	if c.Transport != "stdio" && c.Auth == "none" && !IsLoopback(c.Listen) && (c.TLS.Cert == "" || c.TLS.ClientCA == "") {
		add("listen %q is not loopback: serving it without agent tokens would let anyone on the network spend; use --auth tokens, or TLS with client certificates (--tls-cert, --tls-key and --tls-client-ca)", c.Listen)
	}
	if c.TLS.ClientCA != "" && c.TLS.Cert == "" {
		add("tls.client_ca needs tls.cert and tls.key")
	}
	if c.DB == "" {
		add("db: a SQLite file path or a postgres:// URL is required")
	}
	seen := map[string]bool{}
	for i, a := range c.Agents {
		if a.Name == "" {
			add("agents[%d]: name is required", i)
		}
		if seen[a.Name] {
			add("agents[%d]: duplicate name %q", i, a.Name)
		}
		seen[a.Name] = true
		if a.Team == "" {
			add("agents[%d] %q: team is required", i, a.Name)
		}
		if len(a.Roles) == 0 {
			add("agents[%d] %q: at least one role is required", i, a.Name)
		}
		for k := range a.Attributes {
			if slices.Contains(ReservedAttributes, k) {
				add("agents[%d] %q: attribute %q is set by tollgate itself (from team, owner or the MCP session); remove it", i, a.Name, k)
			}
		}
	}
	if c.Agent != "" && !seen[c.Agent] {
		add("agent %q is not in agents: (known: %s)", c.Agent, strings.Join(agentNames(c.Agents), ", "))
	}
	apprSeen := map[string]bool{}
	for i, a := range c.Approvers {
		if a.Name == "" {
			add("approvers[%d]: name is required", i)
		}
		if apprSeen[a.Name] {
			add("approvers[%d]: duplicate name %q", i, a.Name)
		}
		apprSeen[a.Name] = true
		if len(a.Roles) == 0 {
			add("approvers[%d] %q: at least one role is required (approver or finance_approver)", i, a.Name)
		}
	}
	if c.Approvals.Wait < 0 || c.Approvals.Wait > 10*time.Minute {
		add("approvals.wait %s: use 0 to 10m", c.Approvals.Wait)
	}
	if c.Approvals.Expiry < time.Minute || c.Approvals.Expiry > 7*24*time.Hour {
		add("approvals.expiry %s: use 1m to 168h", c.Approvals.Expiry)
	}
	for i, q := range c.Approvals.Quorum {
		if _, err := money.ParseMoney(q.Above, orUSD(q.Currency)); err != nil {
			add("approvals.quorum[%d].above: %v", i, err)
		}
		if q.Approvers < 1 || q.Approvers > 10 {
			add("approvals.quorum[%d].approvers %d: use 1 to 10", i, q.Approvers)
		}
	}
	for i, b := range c.Budgets {
		if _, err := b.Budget(); err != nil {
			add("budgets[%d]: %v", i, err)
		}
	}
	for i, l := range c.Limits {
		if _, err := l.VelocityLimit(); err != nil {
			add("limits[%d]: %v", i, err)
		}
	}
	if _, err := c.Pricing.Workers.book(); err != nil {
		add("pricing.workers: %v", err)
	}
	if c.Cloudflare.TokenTTL < time.Minute || c.Cloudflare.TokenTTL > 15*time.Minute {
		add("cloudflare.token_ttl %s: use 1m to 15m", c.Cloudflare.TokenTTL)
	}
	if c.Cloudflare.RotateEvery != 0 && c.Cloudflare.RotateEvery < time.Hour {
		add("cloudflare.rotate_every %s: use 0 (never) or at least 1h", c.Cloudflare.RotateEvery)
	}
	if dc := c.Cerbos.DecisionCache; dc.Size < 0 || (dc.Size > 0 && (dc.TTL < time.Second || dc.TTL > time.Hour)) {
		add("cerbos.decision_cache: size %d, ttl %s: use size 0 (off) or more, with a ttl from 1s to 1h", dc.Size, dc.TTL)
	}
	if c.Cerbos.MetricsAddr != "" && c.Cerbos.Addr == "" {
		add("cerbos.metrics_addr %q is for an external PDP (cerbos.addr); the managed PDP needs none", c.Cerbos.MetricsAddr)
	}
	if c.Console.PublicURL != "" {
		if err := web.CheckBaseURL(c.Console.PublicURL); err != nil {
			add("console.public_url: %v", err)
		}
	}
	if c.Console.LinkTTL < 0 || c.Console.LinkTTL > time.Hour {
		add("console.link_ttl %s: use 1s to 1h (0 = 10m)", c.Console.LinkTTL)
	}
	if c.Console.SessionTTL < 0 || c.Console.SessionTTL > 7*24*time.Hour {
		add("console.session_ttl %s: use 1s to 168h (0 = 8h)", c.Console.SessionTTL)
	}
	if h := c.HTTP; h.MaxBodyBytes < 0 || (h.MaxBodyBytes > 0 && h.MaxBodyBytes < 64<<10) {
		add("http.max_body_bytes %d: use at least 65536 (64 KiB), or 0 for the default %d (a %d-byte Worker module in JSON)", h.MaxBodyBytes, DefaultMaxBodyBytes, tools.MaxModuleBytes)
	}
	if c.HTTP.ReadHeaderTimeout <= 0 || c.HTTP.BodyReadTimeout <= 0 || c.HTTP.IdleTimeout <= 0 {
		add("http.read_header_timeout %s, http.body_read_timeout %s, http.idle_timeout %s: each must be positive", c.HTTP.ReadHeaderTimeout, c.HTTP.BodyReadTimeout, c.HTTP.IdleTimeout)
	}
	if c.HTTP.MaxHeaderBytes < 4<<10 {
		add("http.max_header_bytes %d: use at least 4096", c.HTTP.MaxHeaderBytes)
	}
	if c.HTTP.MaxInFlightPerAgent < 0 {
		add("http.max_in_flight_per_agent %d: use 0 (no cap) or more", c.HTTP.MaxInFlightPerAgent)
	}
	if c.HTTP.MaxSessionsPerAgent < 0 {
		add("http.max_sessions_per_agent %d: use 0 (no cap) or more", c.HTTP.MaxSessionsPerAgent)
	}
	if c.HTTP.SessionIdleTimeout < 0 {
		add("http.session_idle_timeout %s: use 0 (sessions end only on DELETE) or a positive duration such as 30m", c.HTTP.SessionIdleTimeout)
	}
	if c.QuotesPerMinute < 0 {
		add("quotes_per_minute %d: use 0 (no cap) or more", c.QuotesPerMinute)
	}
	if c.AutoFreeze.Blocks < 0 || (c.AutoFreeze.Blocks > 0 && c.AutoFreeze.Within <= 0) {
		add("auto_freeze: blocks ≥ 0 and a positive within")
	}
	if c.Audit.CheckpointEvents < 0 {
		add("audit.checkpoint_events %d: use 0 (no count) or more", c.Audit.CheckpointEvents)
	}
	if c.Audit.CheckpointInterval < 0 || (c.Audit.CheckpointInterval > 0 && c.Audit.CheckpointInterval < time.Minute) {
		add("audit.checkpoint_interval %s: use 0 (no interval) or 1m and more", c.Audit.CheckpointInterval)
	}
	return errors.Join(errs...)
}

func agentNames(as []AgentConfig) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Name)
	}
	return out
}

func orUSD(c string) string {
	if c == "" {
		return "USD"
	}
	return strings.ToUpper(c)
}

// Budget parses the configured budget.
func (b BudgetConfig) Budget() (ledger.Budget, error) {
	scope, err := ledger.ParseScope(b.Scope)
	if err != nil {
		return ledger.Budget{}, err
	}
	win, err := ledger.ParseWindow(b.Window)
	if err != nil {
		return ledger.Budget{}, err
	}
	lim, err := money.ParseMoney(b.Limit, orUSD(b.Currency))
	if err != nil {
		return ledger.Budget{}, fmt.Errorf("limit: %w", err)
	}
	return ledger.Budget{Scope: scope, Window: win, Limit: lim}, nil
}

// VelocityLimit parses the configured limit.
func (l LimitConfig) VelocityLimit() (ledger.VelocityLimit, error) {
	scope, err := ledger.ParseScope(l.Scope)
	if err != nil {
		return ledger.VelocityLimit{}, err
	}
	win, err := ledger.ParseWindow(l.Window)
	if err != nil {
		return ledger.VelocityLimit{}, err
	}
	if win == ledger.WindowTotal {
		return ledger.VelocityLimit{}, fmt.Errorf("window total: velocity limits use day or month")
	}
	if !tools.IsRateLimited(l.Action) {
		return ledger.VelocityLimit{}, fmt.Errorf("action %q: use %s", l.Action, tools.OrList(tools.RateLimited()))
	}
	if l.Max < 0 {
		return ledger.VelocityLimit{}, fmt.Errorf("max %d: use 0 or more", l.Max)
	}
	return ledger.VelocityLimit{Scope: scope, Action: l.Action, Window: win, Max: l.Max}, nil
}

func (w WorkersPricingConfig) book() (tools.WorkersPricing, error) {
	cur := orUSD(w.Currency)
	var errs []error
	parse := func(name, v string) money.Money {
		m, err := money.ParseMoney(v, cur)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		return m
	}
	p := tools.WorkersPricing{
		Currency:           cur,
		MonthlyPlan:        parse("monthly_plan", w.MonthlyPlan),
		PerMillionRequests: parse("per_million_requests", w.PerMillionRequests),
		PerMillionCPUMs:    parse("per_million_cpu_ms", w.PerMillionCPUMs),
	}
	return p, errors.Join(errs...)
}

// agent returns the configured agent by name.
func (c Config) agent(name string) (AgentConfig, bool) {
	for _, a := range c.Agents {
		if a.Name == name {
			return a, true
		}
	}
	return AgentConfig{}, false
}

// IsLoopback reports whether a host:port listens only on loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
