package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/money"
)

const (
	deployWorkerName = "deploy_worker"
	// MaxModuleBytes is the largest Worker module tollgate accepts: 3 MiB,
	// the Workers free-plan limit. The default policy's
	// max_worker_module_bytes (export_constants/tollgate_guardrails.yaml) is
	// the same number, and a test keeps them equal.
	MaxModuleBytes = 3 << 20
	previewSuffix  = "-preview"
	moduleName     = "worker.js"
)

var (
	// A name starts and ends with a letter or digit: "web-" would deploy its
	// previews as "web--preview".
	scriptNameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	compatDateRE   = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	esmExportRE    = regexp.MustCompile(`(?m)^\s*export\s+(default\b|\{|async\s+function|function|class|const|let|var)`)
	environmentSet = []string{"preview", "production"}
)

// DeployWorkerArgs are the arguments of deploy_worker.
type DeployWorkerArgs struct {
	ScriptName        string `json:"script_name" jsonschema:"the Worker's name; must start with your team's prefix under the default policy"`
	Module            string `json:"module" jsonschema:"the Worker source as one ES module (export default { async fetch(request, env, ctx) { ... } })"`
	CompatibilityDate string `json:"compatibility_date,omitempty" jsonschema:"the Workers runtime compatibility date, YYYY-MM-DD, not in the future; today's date (UTC) when left out"`
	Environment       string `json:"environment" jsonschema:"preview deploys <script_name>-preview on workers.dev; production deploys <script_name> and needs human approval"`
	Reason            string `json:"reason" jsonschema:"why you are deploying this; shown to the human who approves production deploys"`
	IdempotencyKey    string `json:"idempotency_key,omitempty" jsonschema:"reuse the same key to retry safely: the same key never deploys twice"`
	// Rollout moves production traffic to the new version step by step.
	Rollout *RolloutArgs `json:"rollout,omitempty" jsonschema:"production only: upload the new version and move traffic to it step by step; a failed step, a freeze or rollback_worker returns all traffic to the version live before. One approval covers every step"`
}

// deployArgs are the normalised arguments an Operation is bound to. The
// module itself is stored once, by hash, beside the Operation.
type deployArgs struct {
	ScriptName        string `json:"script_name"`
	Environment       string `json:"environment"`
	CompatibilityDate string `json:"compatibility_date"`
	DeployedName      string `json:"deployed_name"`
	ModuleSHA256      string `json:"module_sha256"`
	ModuleSize        int    `json:"module_size"`
	// Rollout is absent for an all-at-once deploy, so the arguments of such
	// a deploy hash as they always did.
	Rollout *rolloutPlan `json:"rollout,omitempty"`
}

// DeployResult is what a successful deploy returns.
type DeployResult struct {
	ScriptName   string    `json:"script_name"`
	DeployedName string    `json:"deployed_name"`
	Environment  string    `json:"environment"`
	Etag         string    `json:"etag"`
	URL          string    `json:"url,omitempty"`
	ModifiedOn   time.Time `json:"modified_on,omitzero"`
	ModuleSHA256 string    `json:"module_sha256"`
	// CompatibilityDate is the date the Worker runs with (today's, UTC, when
	// the call left it out).
	CompatibilityDate string `json:"compatibility_date"`
	Warning           string `json:"warning,omitempty" jsonschema:"something that went wrong after the code went live"`
	// Rollout is how a gradual rollout went.
	Rollout *RolloutResult `json:"rollout,omitempty"`
}

// DeployWorker is the deploy_worker tool. Production deploys always wait for
// a human approval; preview deploys run unless policy asks for approval.
func DeployWorker(r Runner, cfg Config) Tool {
	m := deployWorker{cfg: cfg}
	tool := mcp.NewTool(deployWorkerName,
		mcp.WithToolTitle("Deploy a Cloudflare Worker"),
		mcp.WithDescription("Uploads one ES-module Worker script (at most 3 MiB). environment=preview deploys "+
			"<script_name>-preview with a workers.dev URL and costs nothing; environment=production deploys "+
			"<script_name>, replaces what is live, and waits for a human approver in Slack. The first production deploy "+
			"of a month holds the Workers Paid plan's monthly price against your budgets; usage is billed by "+
			"Cloudflare per request and CPU time. If no decision arrives within the wait, the result has status "+
			"awaiting_approval and an operation_id: call get_operation with it later."),
		withInput[DeployWorkerArgs](deploySchema),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
		mcp.WithTaskSupport(mcp.TaskSupportOptional),
	)
	return Tool{Tool: tool, Handler: mutationHandler(r, m)}
}

func deploySchema(p map[string]*jsonschema.Schema) {
	p["script_name"].Pattern = scriptNameRE.String()
	p["module"].MinLength, p["module"].MaxLength = ptr(1), ptr(MaxModuleBytes)
	p["compatibility_date"].Pattern = compatDateRE.String()
	p["environment"].Enum = []any{"preview", "production"}
	if r := p["rollout"]; r != nil {
		r.Types, r.Type = nil, "object"
		r.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}}
		steps := r.Properties["steps"]
		steps.Types, steps.Type = nil, "array"
		steps.MinItems, steps.MaxItems = ptr(1), ptr(maxRolloutSteps)
		steps.Items.Minimum, steps.Items.Maximum = ptr(1.0), ptr(100.0)
		r.Properties["interval"].Pattern = `^([0-9]+(\.[0-9]+)?(h|m|s))+$`
	}
	reasonAndKeySchema(p)
}

type deployWorker struct{ cfg Config }

var _ Mutation = deployWorker{}

func (deployWorker) Name() string   { return deployWorkerName }
func (deployWorker) Action() string { return "deploy" }

// Access: Workers scripts, write and read back; reconciling reads the
// script's content.
func (deployWorker) Access() Access {
	return Access{
		Execute:   cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead, cloudflare.GroupWorkersWrite}},
		Reconcile: cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead}},
	}
}

func (m deployWorker) normalize(raw json.RawMessage, estimate bool, now time.Time) (Call, error) {
	a, err := decodeArgs[DeployWorkerArgs](raw, optionalFor(estimate)...)
	if err != nil {
		return Call{}, err
	}
	if a.CompatibilityDate == "" {
		a.CompatibilityDate = now.UTC().Format(time.DateOnly)
	}
	var errs InputErrors
	name := strings.TrimSpace(a.ScriptName)
	const nameAllowed = "1-63 characters: lower-case letters, digits and hyphens, starting and ending with a letter or digit"
	switch {
	case strings.HasSuffix(name, "-") && scriptNameRE.MatchString(strings.TrimRight(name, "-")):
		errs = append(errs, inputErr("script_name", nameAllowed, "%q ends in a hyphen (its previews would be deployed as %q)", name, name+previewSuffix))
	case !scriptNameRE.MatchString(name):
		errs = append(errs, inputErr("script_name", nameAllowed, "%q is not a valid Worker name", truncate(name, 80)))
	}
	env := a.Environment
	switch env {
	case "preview", "production":
	default:
		errs = append(errs, inputErr("environment", strings.Join(environmentSet, " or "), "%q is not an environment", truncate(env, 40)))
	}
	if strings.HasSuffix(name, previewSuffix) {
		// <name>-preview is where previews of <name> live: a Worker of that
		// name could be overwritten by a preview, without approval.
		errs = append(errs, inputErr("script_name", "a name not ending in -preview (previews of NAME are deployed as NAME-preview)", "%q ends in %s", name, previewSuffix))
	}
	deployed := name
	if env == "preview" {
		deployed = name + previewSuffix
		if len(deployed) > 63 && scriptNameRE.MatchString(name) {
			errs = append(errs, inputErr("script_name", "at most 55 characters for preview deploys", "%q plus %q is longer than 63 characters", name, previewSuffix))
		}
	}
	if e := checkCompatDate(a.CompatibilityDate, now); e != nil {
		errs = append(errs, e)
	}
	rollout, rerrs := checkRollout(a.Rollout, env)
	errs = append(errs, rerrs...)
	if e := checkModule(a.Module); e != nil {
		errs = append(errs, e)
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
	module := []byte(a.Module)
	sum := sha256.Sum256(module)
	args, hash, err := canonicalHash(deployArgs{
		ScriptName: name, Environment: env, CompatibilityDate: a.CompatibilityDate, DeployedName: deployed,
		ModuleSHA256: hex.EncodeToString(sum[:]), ModuleSize: len(module), Rollout: rollout,
	})
	if err != nil {
		return Call{}, err
	}
	return Call{
		Tool: deployWorkerName, Args: args, ArgsHash: hash, Resource: "worker_script:" + name,
		Reason: a.Reason, IdempotencyKey: a.IdempotencyKey, Blob: module,
	}, nil
}

func checkCompatDate(s string, now time.Time) *InputError {
	const allowed = "a date YYYY-MM-DD that is not in the future"
	if !compatDateRE.MatchString(s) {
		return inputErr("compatibility_date", allowed, "%q is not a date in the form YYYY-MM-DD", truncate(s, 40))
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return inputErr("compatibility_date", allowed, "%q is not a real date", s)
	}
	if d.After(now.UTC().Truncate(24 * time.Hour)) {
		return inputErr("compatibility_date", allowed, "%s is in the future", s)
	}
	return nil
}

func checkModule(src string) *InputError {
	allowed := fmt.Sprintf("one ES module of at most 3 MiB (%d bytes) of UTF-8 with an export, e.g. export default { async fetch(request) { return new Response('ok') } }", MaxModuleBytes)
	switch {
	case len(src) == 0:
		return inputErr("module", allowed, "is empty")
	case len(src) > MaxModuleBytes:
		return inputErr("module", allowed, "is %d bytes, over the limit of %d", len(src), MaxModuleBytes)
	case !utf8.ValidString(src):
		return inputErr("module", allowed, "is not valid UTF-8")
	case strings.ContainsRune(src, 0):
		return inputErr("module", allowed, "contains NUL bytes")
	case !esmExportRE.MatchString(src):
		return inputErr("module", allowed, "has no export statement, so it is not an ES module Worker")
	}
	return nil
}

func (deployWorker) decode(raw json.RawMessage) (deployArgs, error) {
	var a deployArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("stored deploy_worker arguments: %w", err)
	}
	return a, nil
}

func (m deployWorker) PreResource(raw json.RawMessage) (authz.Resource, error) {
	a, err := m.decode(raw)
	if err != nil {
		return authz.Resource{}, err
	}
	attr := map[string]any{"environment": a.Environment, "size_bytes": a.ModuleSize, "module_sha256": a.ModuleSHA256}
	if r := a.Rollout; r != nil {
		steps := make([]any, len(r.Steps))
		for i, s := range r.Steps {
			steps[i] = s
		}
		attr["rollout_steps"], attr["rollout_interval_seconds"] = steps, r.IntervalSeconds
	}
	return authz.Resource{Kind: "worker_script", ID: a.ScriptName, Attr: attr}, nil
}

// commitmentKey names the once-a-month Workers plan charge.
func commitmentKey(now time.Time) string {
	return "workers-paid-plan:" + now.UTC().Format("2006-01")
}

func (m deployWorker) Plan(ctx context.Context, env PlanEnv, raw json.RawMessage, blob []byte) (Plan, error) {
	a, err := m.decode(raw)
	if err != nil {
		return Plan{}, err
	}
	res, _ := m.PreResource(raw)
	book := m.cfg.Workers
	zero := money.Money{Currency: book.Currency}
	p := Plan{
		Resource:       res,
		Amount:         zero,
		Basis:          "configured price book",
		QuoteExpiresAt: env.Now().Add(m.cfg.QuoteTTL),
		Irreversible:   a.Environment == "production",
		Summary:        fmt.Sprintf("Deploy Worker %s to %s (%d bytes)", a.DeployedName, a.Environment, a.ModuleSize),
		Fields: []approvals.Field{
			{Label: "Script", Value: a.DeployedName},
			{Label: "Environment", Value: a.Environment},
			{Label: "Compatibility date", Value: a.CompatibilityDate},
		},
		Module: moduleSummary(blob, a),
	}
	if r := a.Rollout; r != nil {
		p.Summary = fmt.Sprintf("Deploy Worker %s to production (%d bytes) as a gradual rollout: %s; a failed step, a freeze or rollback_worker returns all traffic to the version live now", a.DeployedName, a.ModuleSize, r)
		p.Fields = append(p.Fields, approvals.Field{Label: "Rollout", Value: r.String() + " (this one approval covers every step)"})
	}
	usage := []CostLine{
		{Item: "requests", Amount: AmountOf(book.PerMillionRequests), Note: "per million, billed by Cloudflare on use; not reserved"},
		{Item: "CPU time", Amount: AmountOf(book.PerMillionCPUMs), Note: "per million CPU-milliseconds, billed on use; not reserved"},
	}
	if a.Environment != "production" {
		p.Breakdown = append([]CostLine{{Item: "preview deploy", Amount: AmountOf(zero), Note: "previews commit no plan charge"}}, usage...)
		return p, nil
	}
	key := commitmentKey(env.Now())
	done, err := env.CommitmentRecorded(ctx, key)
	if err != nil {
		return Plan{}, fmt.Errorf("look up the monthly plan commitment: %w", err)
	}
	if done {
		p.Breakdown = append([]CostLine{{Item: "Workers Paid plan, " + env.Now().UTC().Format("January 2006"), Amount: AmountOf(zero), Note: "already committed this month"}}, usage...)
		return p, nil
	}
	p.Amount = book.MonthlyPlan
	p.Commitment = &ledger.Commitment{Key: key, Amount: book.MonthlyPlan}
	p.Breakdown = append([]CostLine{{Item: "Workers Paid plan, " + env.Now().UTC().Format("January 2006"), Amount: AmountOf(book.MonthlyPlan), Note: "committed once a month, on the first production deploy"}}, usage...)
	return p, nil
}

// moduleSummary is the module as an approver sees it: size, hash and the
// first lines (the approvals package truncates them to Slack's limits).
func moduleSummary(src []byte, a deployArgs) *approvals.Module {
	lines := bytes.SplitN(src, []byte("\n"), moduleSummaryLines+1)
	if len(lines) > moduleSummaryLines {
		lines = lines[:moduleSummaryLines]
	}
	return &approvals.Module{Name: moduleName, Size: a.ModuleSize, SHA256: a.ModuleSHA256, FirstLines: string(bytes.Join(lines, []byte("\n")))}
}

const moduleSummaryLines = 12

// AlwaysNeedsApproval is true for production: it replaces what is live.
func (m deployWorker) AlwaysNeedsApproval(raw json.RawMessage) bool {
	a, err := m.decode(raw)
	return err != nil || a.Environment != "preview"
}

func (m deployWorker) Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error) {
	a, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, err
	}
	sum := sha256.Sum256(in.Blob)
	if hex.EncodeToString(sum[:]) != a.ModuleSHA256 || len(in.Blob) != a.ModuleSize {
		return Outcome{}, fmt.Errorf("%w: stored module does not match the approved sha256 %s; refusing to deploy", ErrNotAttempted, a.ModuleSHA256)
	}
	if a.Rollout != nil {
		out, first, err := m.startRollout(ctx, s, in, a)
		if !first {
			return out, err
		}
		// No version serves yet: there is nothing to roll out from.
	}
	dep, err := s.DeployWorker(ctx, cloudflare.DeployParams{
		ScriptName: a.DeployedName, Module: in.Blob, ModuleName: moduleName,
		CompatibilityDate: a.CompatibilityDate, WorkersDev: a.Environment == "preview",
	})
	warning := ""
	switch {
	case err != nil && dep != nil:
		// The code is live; only the workers.dev route failed. That is a
		// deploy that happened, and must be settled as one.
		warning = "uploaded, but the workers.dev URL could not be enabled: " + err.Error()
	case err != nil:
		return Outcome{}, err
	}
	res := DeployResult{
		ScriptName: a.ScriptName, DeployedName: dep.ScriptName, Environment: a.Environment,
		Etag: dep.Etag, URL: dep.URL, ModifiedOn: dep.ModifiedOn, ModuleSHA256: a.ModuleSHA256, CompatibilityDate: a.CompatibilityDate, Warning: warning,
	}
	summary := fmt.Sprintf("Deployed %s (etag %s)", dep.ScriptName, truncate(dep.Etag, 16))
	if dep.URL != "" {
		summary += " at " + dep.URL
	}
	if warning != "" {
		summary += "; " + warning
	}
	if a.Rollout != nil {
		res.Warning = "the Worker had no version serving yet, so all traffic went to this one at once (a rollout needs a version to move traffic from)"
		summary += "; " + res.Warning
	}
	return Outcome{Result: res, Charged: in.MaxAmount, Summary: summary}, nil
}

// startRollout uploads the new version and puts the first step in force.
// first is true when the Worker does not exist yet (nothing to roll out
// from): the caller deploys it whole instead.
func (m deployWorker) startRollout(ctx context.Context, s *cloudflare.Session, in ExecInput, a deployArgs) (out Outcome, first bool, err error) {
	deps, err := s.Deployments(ctx, a.DeployedName)
	if errors.Is(err, cloudflare.ErrNotFound) || err == nil && len(deps) == 0 {
		return Outcome{}, true, nil
	}
	if err != nil {
		return Outcome{}, false, fmt.Errorf("%w: read %s's deployments: %w", ErrNotAttempted, a.DeployedName, err)
	}
	vs, err := s.Versions(ctx, a.DeployedName)
	if err != nil {
		return Outcome{}, false, fmt.Errorf("%w: read %s's versions: %w", ErrNotAttempted, a.DeployedName, err)
	}
	live, newest, _ := liveVersions(deps, versionNumbers(vs))
	if newest == "" || len(live.Traffic) > 1 && live.Traffic[0].Percentage > 0 && live.Traffic[1].Percentage > 0 {
		return Outcome{}, false, &ToolError{Code: "rollout_in_progress", Message: fmt.Sprintf(
			"%s splits its traffic across two versions now (another rollout is under way); nothing was changed. Wait for it to finish, or rollback_worker, then deploy again", a.DeployedName)}
	}
	v, err := s.UploadVersion(ctx, cloudflare.VersionParams{
		ScriptName: a.DeployedName, Module: in.Blob, ModuleName: moduleName, CompatibilityDate: a.CompatibilityDate,
		Tag: in.OperationID, Message: "tollgate " + in.OperationID,
	})
	if err != nil {
		return Outcome{}, false, err
	}
	r := &Rollout{Script: a.DeployedName, Previous: newest, Version: v.ID, Steps: a.Rollout.Steps, Interval: a.Rollout.interval(), Tag: in.OperationID}
	if _, err := r.Step(ctx, s); err != nil {
		return Outcome{}, false, err
	}
	return m.rolloutOutcome(a, r, in.MaxAmount, ""), false, nil
}

// rolloutOutcome is where a rollout stands, as an Outcome.
func (deployWorker) rolloutOutcome(a deployArgs, r *Rollout, charged money.Money, rolledBack string) Outcome {
	res := DeployResult{
		ScriptName: a.ScriptName, DeployedName: a.DeployedName, Environment: a.Environment,
		ModuleSHA256: a.ModuleSHA256, CompatibilityDate: a.CompatibilityDate, Rollout: r.Result(rolledBack),
	}
	summary := fmt.Sprintf("Rolling out %s: %d%% of traffic on version %s (step %d of %d)", a.DeployedName, r.Percent(), truncate(r.Version, 8), r.Done, len(r.Steps))
	if r.Finished() {
		summary = fmt.Sprintf("Rolled out %s: all traffic on version %s after %d steps", a.DeployedName, truncate(r.Version, 8), len(r.Steps))
	}
	return Outcome{Result: res, Charged: charged, Summary: summary, Rollout: r}
}

// RolloutOutcome is the Outcome of a rollout the pipeline moved on (or
// stopped: rolledBack says why) for the stored arguments args.
func (m deployWorker) RolloutOutcome(args json.RawMessage, r *Rollout, charged money.Money, rolledBack string) Outcome {
	a, _ := m.decode(args)
	return m.rolloutOutcome(a, r, charged, rolledBack)
}

// reconcileRollout asks Cloudflare where an interrupted rollout stands: the
// version it uploaded (by its tag) and the deployment in force.
func (m deployWorker) reconcileRollout(ctx context.Context, s *cloudflare.Session, in ExecInput, a deployArgs) (Outcome, bool, error) {
	vs, err := s.Versions(ctx, a.DeployedName)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, err
	}
	var mine string
	for _, v := range vs {
		if v.Tag == in.OperationID {
			mine = v.ID
		}
	}
	if mine == "" {
		return Outcome{}, false, errNoRolloutVersion
	}
	deps, err := s.Deployments(ctx, a.DeployedName)
	if err != nil {
		return Outcome{}, false, err
	}
	live, _, _ := liveVersions(deps, versionNumbers(vs))
	r := &Rollout{Script: a.DeployedName, Version: mine, Steps: a.Rollout.Steps, Interval: a.Rollout.interval(), Tag: in.OperationID}
	pct := 0.0
	for _, t := range live.Traffic {
		if t.VersionID == mine {
			pct = t.Percentage
		} else if t.Percentage > 0 {
			r.Previous = t.VersionID
		}
	}
	if pct == 0 {
		// Uploaded but serving nothing (never stepped, or rolled back).
		return Outcome{}, false, nil
	}
	for _, st := range r.Steps {
		if float64(st) <= pct {
			r.Done++
		}
	}
	if pct == 100 {
		r.Done = len(r.Steps)
		// The previous version is the last other one with all traffic.
		_, _, r.Previous = liveVersions(deps, versionNumbers(vs))
	}
	return m.rolloutOutcome(a, r, in.MaxAmount, ""), true, nil
}

// errNoRolloutVersion: the rollout uploaded nothing; whether a whole
// deploy (a Worker without versions) happened is the content check's.
var errNoRolloutVersion = errors.New("no version tagged with the operation")

func (m deployWorker) Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, bool, error) {
	a, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, false, err
	}
	if a.Rollout != nil {
		out, found, err := m.reconcileRollout(ctx, s, in, a)
		if !errors.Is(err, errNoRolloutVersion) {
			return out, found, err
		}
	}
	sc, err := s.GetWorker(ctx, a.DeployedName)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, err
	}
	if sc.ModuleSHA256 != a.ModuleSHA256 {
		// Something else is live under that name: this deploy did not land.
		return Outcome{}, false, nil
	}
	res := DeployResult{
		ScriptName: a.ScriptName, DeployedName: sc.ScriptName, Environment: a.Environment,
		Etag: sc.Etag, ModifiedOn: sc.ModifiedOn, ModuleSHA256: sc.ModuleSHA256, CompatibilityDate: a.CompatibilityDate,
	}
	return Outcome{Result: res, Charged: in.MaxAmount, Summary: "Deployed " + sc.ScriptName + " (found after restart)"}, true, nil
}

// deployWorkerApproval: a production deploy replaces what is live (at once,
// or step by step under a rollout); the console shows the module against
// the script it replaces; a mandate covers Workers with the same prefix,
// in preview only; the quorum probe is a production deploy holding the
// monthly plan.
var deployWorkerApproval = ApprovalTraits{
	Consequence: func(raw json.RawMessage) string {
		a, err := deployWorker{}.decode(raw)
		switch {
		case err != nil || a.DeployedName == "":
			return ""
		case a.Environment != "production":
			return fmt.Sprintf("The preview script %s is replaced as soon as it is deployed; production is not touched.", a.DeployedName)
		case a.Rollout != nil:
			return fmt.Sprintf("The new version of %s takes production traffic step by step (%s) under this one approval; a failed step, a freeze or rollback_worker returns all traffic to the version live now.", a.DeployedName, a.Rollout)
		}
		return fmt.Sprintf("The new script replaces the one live in production (%s) as soon as it is deployed; rollback_worker returns traffic to the version live now.", a.DeployedName)
	},
	ReplacedScript: func(raw json.RawMessage) (string, error) {
		a, err := deployWorker{}.decode(raw)
		if err == nil && a.DeployedName == "" {
			err = errors.New("stored deploy_worker arguments name no deployed script")
		}
		return a.DeployedName, err
	},
	MandatePattern: func(name string) string {
		if i := strings.Index(name, "-"); i > 0 {
			return name[:i+1] + "*"
		}
		return name
	},
	// A mandate never covers a production deploy; the policy says so again.
	MandateEnvironment: "preview",
	QuorumProbe: func(e ProbeEnv) QuorumProbe {
		return QuorumProbe{Amount: e.Config.Workers.MonthlyPlan, Irreversible: true, Resource: authz.Resource{
			Kind: "worker_script", ID: e.Team + "-quorum-check", Attr: map[string]any{
				"environment": "production", "size_bytes": 1024, "module_sha256": strings.Repeat("0", 64),
			},
		}}
	},
}
