package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger/money"
)

const (
	attachWorkerDomainName = "attach_worker_domain"
	detachWorkerDomainName = "detach_worker_domain"
	// workerDomainKind is the Cerbos resource kind of a hostname served by a
	// Worker (cerbos-policies/resource_policies/worker_domain.yaml).
	workerDomainKind = "worker_domain"
)

// AttachWorkerDomainArgs are the arguments of attach_worker_domain.
type AttachWorkerDomainArgs struct {
	ScriptName     string `json:"script_name" jsonschema:"the deployed Worker that will serve the hostname, as named to deploy_worker"`
	Hostname       string `json:"hostname" jsonschema:"the hostname to serve: a domain of the account (the apex, e.g. example.dev) or a name under it (www.example.dev); internationalised names are converted to punycode"`
	Environment    string `json:"environment" jsonschema:"production attaches <script_name>; preview attaches <script_name>-preview"`
	Reason         string `json:"reason" jsonschema:"why this hostname should serve this Worker; shown to the human who approves"`
	IdempotencyKey string `json:"idempotency_key,omitempty" jsonschema:"reuse the same key to retry safely: the same key never attaches twice"`
}

// DetachWorkerDomainArgs are the arguments of detach_worker_domain.
type DetachWorkerDomainArgs struct {
	Hostname       string `json:"hostname" jsonschema:"the hostname that should stop serving its Worker"`
	Reason         string `json:"reason" jsonschema:"why the hostname should stop serving; shown to the human who approves"`
	IdempotencyKey string `json:"idempotency_key,omitempty" jsonschema:"reuse the same key to retry safely"`
}

// domainArgs are the normalised arguments an attach or detach Operation is
// bound to.
type domainArgs struct {
	Hostname     string `json:"hostname"`
	Domain       string `json:"domain"`
	Apex         bool   `json:"apex"`
	ScriptName   string `json:"script_name,omitempty"`
	Environment  string `json:"environment,omitempty"`
	DeployedName string `json:"deployed_name,omitempty"`
}

// WorkerDomainResult is what a successful attach or detach returns.
type WorkerDomainResult struct {
	Hostname string `json:"hostname"`
	Zone     string `json:"zone"`
	// Script is the Worker now serving the hostname ("" after a detach).
	Script string `json:"script,omitempty"`
	// Previous is the Worker that served it before ("" when none did).
	Previous string `json:"previous,omitempty"`
	URL      string `json:"url,omitempty"`
}

// AttachWorkerDomain is the attach_worker_domain tool.
func AttachWorkerDomain(r Runner, cfg Config) Tool {
	m := attachWorkerDomain{cfg: cfg}
	tool := mcp.NewTool(attachWorkerDomainName,
		mcp.WithToolTitle("Serve a hostname from a Worker"),
		mcp.WithDescription("Attaches a deployed Worker to a hostname on one of the account's zones (a domain registered "+
			"with register_domain has one), as a Workers custom domain: the hostname starts serving that Worker, "+
			"replacing whatever served it. Under the default policy only hostnames on domains your team registered "+
			"through tollgate, with a Worker named with your team's prefix. The apex (example.dev itself) and "+
			"production always wait for a human approver, who sees what serves the hostname now. Free; undo with "+
			"detach_worker_domain. If no decision arrives within the wait, call get_operation with the operation_id later."),
		withInput[AttachWorkerDomainArgs](func(p map[string]*jsonschema.Schema) {
			p["script_name"].Pattern = scriptNameRE.String()
			p["hostname"].MinLength, p["hostname"].MaxLength = ptr(1), ptr(maxNameOctets+1)
			p["environment"].Enum = []any{"preview", "production"}
			reasonAndKeySchema(p)
		}),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	)
	return Tool{Tool: tool, Handler: mutationHandler(r, m)}
}

// DetachWorkerDomain is the detach_worker_domain tool.
func DetachWorkerDomain(r Runner, cfg Config) Tool {
	m := detachWorkerDomain{cfg: cfg}
	tool := mcp.NewTool(detachWorkerDomainName,
		mcp.WithToolTitle("Stop serving a hostname from its Worker (needs human approval)"),
		mcp.WithDescription("Detaches the Worker serving a hostname (a Workers custom domain): the hostname stops "+
			"answering with that Worker at once. Always waits for a human approver, who sees which Worker stops serving "+
			"it. Free. If no decision arrives within the wait, call get_operation with the operation_id later."),
		withInput[DetachWorkerDomainArgs](func(p map[string]*jsonschema.Schema) {
			p["hostname"].MinLength, p["hostname"].MaxLength = ptr(1), ptr(maxNameOctets+1)
			reasonAndKeySchema(p)
		}),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	)
	return Tool{Tool: tool, Handler: mutationHandler(r, m)}
}

// customDomainAccess: Workers Scripts Write on the account and Workers
// Routes Write on exactly the hostname's zone (Cloudflare's Workers
// custom-domain permissions); reconciling lists custom domains.
func customDomainAccess() Access {
	return Access{
		Execute:   cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead, cloudflare.GroupWorkersWrite}, Zone: []string{cloudflare.GroupRoutesWrite}},
		Reconcile: cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead}},
	}
}

type attachWorkerDomain struct{ cfg Config }

var (
	_ Mutation   = attachWorkerDomain{}
	_ ZoneScoped = attachWorkerDomain{}
)

func (attachWorkerDomain) Name() string   { return attachWorkerDomainName }
func (attachWorkerDomain) Action() string { return "attach" }
func (attachWorkerDomain) Access() Access { return customDomainAccess() }

func (attachWorkerDomain) normalize(raw json.RawMessage, estimate bool, _ time.Time) (Call, error) {
	a, err := decodeArgs[AttachWorkerDomainArgs](raw, optionalFor(estimate)...)
	if err != nil {
		return Call{}, err
	}
	var errs InputErrors
	h, herr := NormalizeHostname(a.Hostname)
	var ie *InputError
	if errors.As(herr, &ie) {
		errs = append(errs, ie)
	}
	name := strings.TrimSpace(a.ScriptName)
	if !scriptNameRE.MatchString(name) || strings.HasSuffix(name, previewSuffix) {
		errs = append(errs, inputErr("script_name", "the name given to deploy_worker: 1-63 lower-case letters, digits and hyphens, not ending in -preview (environment=preview picks the preview)", "%q is not a Worker name", truncate(name, 80)))
	}
	deployed := name
	switch a.Environment {
	case "production":
	case "preview":
		deployed = name + previewSuffix
	default:
		errs = append(errs, inputErr("environment", strings.Join(environmentSet, " or "), "%q is not an environment", truncate(a.Environment, 40)))
	}
	if e := checkReason(a.Reason, estimate); e != nil {
		errs = append(errs, e)
	}
	if e := checkKey(a.IdempotencyKey); e != nil {
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return Call{}, errs
	}
	args, hash, err := canonicalHash(domainArgs{
		Hostname: h.FQDN, Domain: h.Domain, Apex: h.Apex, ScriptName: name, Environment: a.Environment, DeployedName: deployed,
	})
	if err != nil {
		return Call{}, err
	}
	return Call{
		Tool: attachWorkerDomainName, Args: args, ArgsHash: hash, Resource: workerDomainKind + ":" + h.FQDN,
		Reason: a.Reason, IdempotencyKey: a.IdempotencyKey,
	}, nil
}

func decodeDomainArgs(raw json.RawMessage) (domainArgs, Hostname, error) {
	var a domainArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, Hostname{}, fmt.Errorf("stored custom-domain arguments: %w", err)
	}
	h, err := NormalizeHostname(a.Hostname)
	if err != nil {
		return a, Hostname{}, err
	}
	return a, h, nil
}

func (attachWorkerDomain) PreResource(raw json.RawMessage) (authz.Resource, error) {
	a, h, err := decodeDomainArgs(raw)
	if err != nil {
		return authz.Resource{}, err
	}
	return authz.Resource{Kind: workerDomainKind, ID: h.FQDN, Attr: map[string]any{
		"hostname": h.FQDN, "domain": h.Domain, "apex": h.Apex, "environment": a.Environment, "script": a.ScriptName,
	}}, nil
}

// Zones implements ZoneScoped: the zone the hostname is on.
func (attachWorkerDomain) Zones(ctx context.Context, l Lookup, raw json.RawMessage) ([]string, error) {
	return hostnameZone(ctx, l, raw)
}

func hostnameZone(ctx context.Context, l Lookup, raw json.RawMessage) ([]string, error) {
	_, h, err := decodeDomainArgs(raw)
	if err != nil {
		return nil, err
	}
	z, err := l.ZoneFor(ctx, h.FQDN)
	if err != nil {
		return nil, fmt.Errorf("find the zone of %s: %w", h.FQDN, err)
	}
	return []string{z.ID}, nil
}

// domainFacts is what planning an attach or detach learns: the zone, what
// serves the hostname now, and whether the caller's team registered the
// domain through tollgate.
type domainFacts struct {
	zone       cloudflare.Zone
	current    *cloudflare.CustomDomain
	registered bool
}

func lookupDomain(ctx context.Context, env PlanEnv, h Hostname) (domainFacts, error) {
	var f domainFacts
	z, err := env.ZoneFor(ctx, h.FQDN)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return f, &ToolError{Code: "not_on_account", Message: fmt.Sprintf("%s is on no zone of this Cloudflare account; register %s first (register_domain) or add its zone", h.Display(), h.Domain)}
	}
	if err != nil {
		return f, upstreamError("zone lookup", err)
	}
	f.zone = z
	cur, err := env.CustomDomains(ctx, cloudflare.DomainFilter{Hostname: h.FQDN})
	if err != nil {
		return f, upstreamError("custom-domain lookup", err)
	}
	for i := range cur {
		if cur[i].Hostname == h.FQDN {
			f.current = &cur[i]
		}
	}
	f.registered, err = env.TeamSucceeded(ctx, registerDomainName, "domain:"+h.Domain)
	if err != nil {
		return f, fmt.Errorf("look up who registered %s: %w", h.Domain, err)
	}
	return f, nil
}

func (f domainFacts) servedBy() string {
	if f.current == nil {
		return "nothing (not attached to any Worker)"
	}
	return "Worker " + f.current.Script
}

func (m attachWorkerDomain) Plan(ctx context.Context, env PlanEnv, raw json.RawMessage, _ []byte) (Plan, error) {
	a, h, err := decodeDomainArgs(raw)
	if err != nil {
		return Plan{}, err
	}
	facts, err := lookupDomain(ctx, env, h)
	if err != nil {
		return Plan{}, err
	}
	res, _ := m.PreResource(raw)
	res.Attr["zone"] = facts.zone.Name
	res.Attr["registered_by_team"] = facts.registered
	current := ""
	if facts.current != nil {
		current = facts.current.Script
	}
	res.Attr["current_script"] = current
	where := "a name under " + h.Domain
	if h.Apex {
		where = "the apex of " + h.Domain
	}
	return Plan{
		Resource:       res,
		Amount:         money.Money{Currency: m.cfg.currency()},
		Breakdown:      []CostLine{{Item: "Workers custom domain", Amount: AmountOf(money.Money{Currency: m.cfg.currency()}), Note: "free; the Worker's usage is billed as before"}},
		Basis:          "custom domains are free",
		QuoteExpiresAt: env.Now().Add(m.cfg.QuoteTTL),
		Summary:        fmt.Sprintf("%s will start serving Worker %s (%s); it is served now by %s", h.Display(), a.DeployedName, a.Environment, facts.servedBy()),
		Fields: []approvals.Field{
			{Label: "Hostname", Value: h.Display() + " (" + where + ")"},
			{Label: "Will serve", Value: "Worker " + a.DeployedName + " (" + a.Environment + ")"},
			{Label: "Served now by", Value: facts.servedBy()},
			{Label: "Zone", Value: facts.zone.Name + " (" + facts.zone.ID + ")"},
			{Label: "Registered by your team through tollgate", Value: yesNo(facts.registered)},
		},
	}, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (c Config) currency() string {
	if c.Workers.Currency != "" {
		return c.Workers.Currency
	}
	return "USD"
}

// AlwaysNeedsApproval is true for the apex and for production: a site's
// public face changes.
func (attachWorkerDomain) AlwaysNeedsApproval(raw json.RawMessage) bool {
	a, _, err := decodeDomainArgs(raw)
	return err != nil || a.Apex || a.Environment != "preview"
}

func (attachWorkerDomain) Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error) {
	a, h, err := decodeDomainArgs(in.Args)
	if err != nil {
		return Outcome{}, err
	}
	if len(s.Zones) != 1 {
		return Outcome{}, fmt.Errorf("%w: the token holds %d zones, want exactly the zone of %s", ErrNotAttempted, len(s.Zones), h.FQDN)
	}
	prev := ""
	if cur, err := s.ListDomains(ctx, cloudflare.DomainFilter{Hostname: h.FQDN}); err == nil && len(cur) == 1 {
		prev = cur[0].Script
	}
	d, err := s.AttachDomain(ctx, cloudflare.AttachParams{Hostname: h.FQDN, Script: a.DeployedName, ZoneID: s.Zones[0]})
	if err != nil {
		return Outcome{}, err
	}
	res := WorkerDomainResult{Hostname: d.Hostname, Zone: d.ZoneName, Script: d.Script, Previous: prev, URL: "https://" + d.Hostname + "/"}
	return Outcome{Result: res, Charged: in.MaxAmount, Summary: fmt.Sprintf("%s now serves Worker %s", h.Display(), d.Script)}, nil
}

func (attachWorkerDomain) Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, bool, error) {
	a, h, err := decodeDomainArgs(in.Args)
	if err != nil {
		return Outcome{}, false, err
	}
	cur, err := s.ListDomains(ctx, cloudflare.DomainFilter{Hostname: h.FQDN})
	if err != nil {
		return Outcome{}, false, err
	}
	for _, d := range cur {
		if d.Hostname == h.FQDN && d.Script == a.DeployedName {
			res := WorkerDomainResult{Hostname: d.Hostname, Zone: d.ZoneName, Script: d.Script, URL: "https://" + d.Hostname + "/"}
			return Outcome{Result: res, Charged: in.MaxAmount, Summary: fmt.Sprintf("%s serves Worker %s (found after restart)", h.Display(), d.Script)}, true, nil
		}
	}
	return Outcome{}, false, nil
}

type detachWorkerDomain struct{ cfg Config }

var (
	_ Mutation   = detachWorkerDomain{}
	_ ZoneScoped = detachWorkerDomain{}
)

func (detachWorkerDomain) Name() string   { return detachWorkerDomainName }
func (detachWorkerDomain) Action() string { return "detach" }
func (detachWorkerDomain) Access() Access { return customDomainAccess() }

func (detachWorkerDomain) normalize(raw json.RawMessage, estimate bool, _ time.Time) (Call, error) {
	a, err := decodeArgs[DetachWorkerDomainArgs](raw, optionalFor(estimate)...)
	if err != nil {
		return Call{}, err
	}
	var errs InputErrors
	h, herr := NormalizeHostname(a.Hostname)
	var ie *InputError
	if errors.As(herr, &ie) {
		errs = append(errs, ie)
	}
	if e := checkReason(a.Reason, estimate); e != nil {
		errs = append(errs, e)
	}
	if e := checkKey(a.IdempotencyKey); e != nil {
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return Call{}, errs
	}
	args, hash, err := canonicalHash(domainArgs{Hostname: h.FQDN, Domain: h.Domain, Apex: h.Apex})
	if err != nil {
		return Call{}, err
	}
	return Call{
		Tool: detachWorkerDomainName, Args: args, ArgsHash: hash, Resource: workerDomainKind + ":" + h.FQDN,
		Reason: a.Reason, IdempotencyKey: a.IdempotencyKey,
	}, nil
}

func (detachWorkerDomain) PreResource(raw json.RawMessage) (authz.Resource, error) {
	_, h, err := decodeDomainArgs(raw)
	if err != nil {
		return authz.Resource{}, err
	}
	return authz.Resource{Kind: workerDomainKind, ID: h.FQDN, Attr: map[string]any{
		"hostname": h.FQDN, "domain": h.Domain, "apex": h.Apex,
	}}, nil
}

// Zones implements ZoneScoped: the zone the hostname is on.
func (detachWorkerDomain) Zones(ctx context.Context, l Lookup, raw json.RawMessage) ([]string, error) {
	return hostnameZone(ctx, l, raw)
}

// environmentOf is the environment a deployed Worker name belongs to.
func environmentOf(script string) string {
	if strings.HasSuffix(script, previewSuffix) {
		return "preview"
	}
	return "production"
}

func (m detachWorkerDomain) Plan(ctx context.Context, env PlanEnv, raw json.RawMessage, _ []byte) (Plan, error) {
	_, h, err := decodeDomainArgs(raw)
	if err != nil {
		return Plan{}, err
	}
	facts, err := lookupDomain(ctx, env, h)
	if err != nil {
		return Plan{}, err
	}
	if facts.current == nil {
		return Plan{}, &ToolError{Code: "not_attached", Message: fmt.Sprintf("%s is not attached to any Worker; nothing to detach (list_domains shows what is)", h.Display())}
	}
	script := facts.current.Script
	res, _ := m.PreResource(raw)
	res.Attr["zone"] = facts.zone.Name
	res.Attr["registered_by_team"] = facts.registered
	res.Attr["environment"] = environmentOf(script)
	res.Attr["script"] = strings.TrimSuffix(script, previewSuffix)
	res.Attr["current_script"] = script
	return Plan{
		Resource:       res,
		Amount:         money.Money{Currency: m.cfg.currency()},
		Breakdown:      []CostLine{{Item: "Workers custom domain", Amount: AmountOf(money.Money{Currency: m.cfg.currency()}), Note: "free"}},
		Basis:          "custom domains are free",
		QuoteExpiresAt: env.Now().Add(m.cfg.QuoteTTL),
		Summary:        fmt.Sprintf("%s will stop serving Worker %s and answer with nothing", h.Display(), script),
		Fields: []approvals.Field{
			{Label: "Hostname", Value: h.Display()},
			{Label: "Stops serving", Value: "Worker " + script + " (" + environmentOf(script) + ")"},
			{Label: "Zone", Value: facts.zone.Name + " (" + facts.zone.ID + ")"},
		},
	}, nil
}

// AlwaysNeedsApproval is true: the hostname goes dark at once.
func (detachWorkerDomain) AlwaysNeedsApproval(json.RawMessage) bool { return true }

func (detachWorkerDomain) Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error) {
	_, h, err := decodeDomainArgs(in.Args)
	if err != nil {
		return Outcome{}, err
	}
	cur, err := s.ListDomains(ctx, cloudflare.DomainFilter{Hostname: h.FQDN})
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: find %s: %w", ErrNotAttempted, h.FQDN, err)
	}
	var d *cloudflare.CustomDomain
	for i := range cur {
		if cur[i].Hostname == h.FQDN {
			d = &cur[i]
		}
	}
	if d == nil {
		// Already gone (detached by someone else): the wanted state holds.
		return Outcome{Result: WorkerDomainResult{Hostname: h.FQDN}, Charged: in.MaxAmount, Summary: h.Display() + " was already detached"}, nil
	}
	if err := s.DetachDomain(ctx, *d); err != nil && !errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, err
	}
	res := WorkerDomainResult{Hostname: h.FQDN, Zone: d.ZoneName, Previous: d.Script}
	return Outcome{Result: res, Charged: in.MaxAmount, Summary: fmt.Sprintf("%s no longer serves Worker %s", h.Display(), d.Script)}, nil
}

func (detachWorkerDomain) Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, bool, error) {
	_, h, err := decodeDomainArgs(in.Args)
	if err != nil {
		return Outcome{}, false, err
	}
	cur, err := s.ListDomains(ctx, cloudflare.DomainFilter{Hostname: h.FQDN})
	if err != nil {
		return Outcome{}, false, err
	}
	for _, d := range cur {
		if d.Hostname == h.FQDN {
			return Outcome{}, false, nil
		}
	}
	return Outcome{Result: WorkerDomainResult{Hostname: h.FQDN}, Charged: in.MaxAmount, Summary: h.Display() + " is detached (found after restart)"}, true, nil
}

// attachWorkerDomainApproval: the hostname answers with the Worker at once;
// the quorum probe is a production attach of the apex of a domain the team
// registered.
var attachWorkerDomainApproval = ApprovalTraits{
	Consequence: func(raw json.RawMessage) string {
		a, h, err := decodeDomainArgs(raw)
		if err != nil || a.DeployedName == "" {
			return ""
		}
		s := fmt.Sprintf("%s answers with Worker %s as soon as it is attached, in place of whatever serves it now; detach_worker_domain undoes it.", h.Display(), a.DeployedName)
		if h.Apex {
			s += " It is the apex: the address of the domain itself."
		}
		return s
	},
	QuorumProbe: func(e ProbeEnv) QuorumProbe {
		domain, script := "quorum-check."+e.TLD, e.Team+"-quorum-check"
		return QuorumProbe{Amount: money.Money{Currency: e.Config.currency()}, Resource: authz.Resource{
			Kind: workerDomainKind, ID: domain, Attr: map[string]any{
				"hostname": domain, "domain": domain, "apex": true, "environment": "production", "script": script,
				"zone": domain, "registered_by_team": true, "current_script": "",
			},
		}}
	},
}

// detachWorkerDomainApproval: the hostname goes dark at once; every detach
// waits for a human, so the probe is a production one of a domain the team
// registered.
var detachWorkerDomainApproval = ApprovalTraits{
	Consequence: func(raw json.RawMessage) string {
		_, h, err := decodeDomainArgs(raw)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%s stops answering as soon as it is detached, until attach_worker_domain puts a Worker on it again.", h.Display())
	},
	QuorumProbe: func(e ProbeEnv) QuorumProbe {
		domain, script := "quorum-check."+e.TLD, e.Team+"-quorum-check"
		return QuorumProbe{Amount: money.Money{Currency: e.Config.currency()}, Resource: authz.Resource{
			Kind: workerDomainKind, ID: "www." + domain, Attr: map[string]any{
				"hostname": "www." + domain, "domain": domain, "apex": false, "environment": "production", "script": script,
				"zone": domain, "registered_by_team": true, "current_script": script,
			},
		}}
	},
}
