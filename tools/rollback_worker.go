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

const rollbackWorkerName = "rollback_worker"

// RollbackWorkerArgs are the arguments of rollback_worker.
type RollbackWorkerArgs struct {
	ScriptName     string `json:"script_name" jsonschema:"the production Worker, as named to deploy_worker"`
	Reason         string `json:"reason" jsonschema:"why traffic should go back; recorded and shown to approvers"`
	IdempotencyKey string `json:"idempotency_key,omitempty" jsonschema:"reuse the same key to retry safely"`
}

// rollbackArgs are the normalised arguments of a rollback.
type rollbackArgs struct {
	ScriptName string `json:"script_name"`
}

// RollbackResult is what a rollback returns.
type RollbackResult struct {
	ScriptName string `json:"script_name"`
	Serving    string `json:"serving" jsonschema:"the version that now has all traffic"`
	From       string `json:"from,omitempty" jsonschema:"the version traffic was taken from"`
}

// RollbackWorker is the rollback_worker tool.
func RollbackWorker(r Runner, cfg Config) Tool {
	m := rollbackWorker{cfg: cfg}
	tool := mcp.NewTool(rollbackWorkerName,
		mcp.WithToolTitle("Return a production Worker's traffic to its previous version"),
		mcp.WithDescription("Sends all of a production Worker's traffic back to the version that served before its "+
			"latest deploy: during a gradual rollout, the version it started from (the rollout stops); after one, the "+
			"version before it. Free, and needs no approval unless policy asks: it returns to code a human already "+
			"let through."),
		withInput[RollbackWorkerArgs](func(p map[string]*jsonschema.Schema) {
			p["script_name"].Pattern = scriptNameRE.String()
			reasonAndKeySchema(p)
		}),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
	)
	return Tool{Tool: tool, Handler: mutationHandler(r, m)}
}

type rollbackWorker struct{ cfg Config }

var _ Mutation = rollbackWorker{}

func (rollbackWorker) Name() string   { return rollbackWorkerName }
func (rollbackWorker) Action() string { return "rollback" }

// Access: Workers scripts, read and write (deployments); reconciling reads
// the deployments.
func (rollbackWorker) Access() Access {
	return Access{
		Execute:   cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead, cloudflare.GroupWorkersWrite}},
		Reconcile: cloudflare.Permissions{Account: []string{cloudflare.GroupWorkersRead}},
	}
}

func (rollbackWorker) normalize(raw json.RawMessage, estimate bool, _ time.Time) (Call, error) {
	a, err := decodeArgs[RollbackWorkerArgs](raw, optionalFor(estimate)...)
	if err != nil {
		return Call{}, err
	}
	var errs InputErrors
	name := strings.TrimSpace(a.ScriptName)
	if !scriptNameRE.MatchString(name) || strings.HasSuffix(name, previewSuffix) {
		errs = append(errs, inputErr("script_name", "a production Worker's name: 1-63 lower-case letters, digits and hyphens, not ending in -preview", "%q is not one", truncate(name, 80)))
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
	args, hash, err := canonicalHash(rollbackArgs{ScriptName: name})
	if err != nil {
		return Call{}, err
	}
	return Call{Tool: rollbackWorkerName, Args: args, ArgsHash: hash, Resource: "worker_script:" + name, Reason: a.Reason, IdempotencyKey: a.IdempotencyKey}, nil
}

func (rollbackWorker) decode(raw json.RawMessage) (rollbackArgs, error) {
	var a rollbackArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("stored rollback_worker arguments: %w", err)
	}
	return a, nil
}

func (m rollbackWorker) PreResource(raw json.RawMessage) (authz.Resource, error) {
	a, err := m.decode(raw)
	if err != nil {
		return authz.Resource{}, err
	}
	return authz.Resource{Kind: "worker_script", ID: a.ScriptName, Attr: map[string]any{"environment": "production"}}, nil
}

func (m rollbackWorker) Plan(_ context.Context, env PlanEnv, raw json.RawMessage, _ []byte) (Plan, error) {
	a, err := m.decode(raw)
	if err != nil {
		return Plan{}, err
	}
	res, _ := m.PreResource(raw)
	zero := money.Money{Currency: m.cfg.currency()}
	return Plan{
		Resource: res, Amount: zero, Basis: "rollbacks are free", QuoteExpiresAt: env.Now().Add(m.cfg.QuoteTTL),
		Breakdown: []CostLine{{Item: "rollback", Amount: AmountOf(zero), Note: "a deployment of a version already uploaded"}},
		Summary:   fmt.Sprintf("Return all traffic of Worker %s to the version that served before its latest deploy", a.ScriptName),
		Fields:    []approvals.Field{{Label: "Script", Value: a.ScriptName}},
	}, nil
}

// AlwaysNeedsApproval is false: a rollback returns to approved code.
func (rollbackWorker) AlwaysNeedsApproval(json.RawMessage) bool { return false }

func (m rollbackWorker) Execute(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, error) {
	a, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, err
	}
	deps, err := s.Deployments(ctx, a.ScriptName)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, &ToolError{Code: "not_found", Message: fmt.Sprintf("there is no Worker %s; nothing was changed", a.ScriptName)}
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: read deployments: %w", ErrNotAttempted, err)
	}
	vs, err := s.Versions(ctx, a.ScriptName)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: read versions: %w", ErrNotAttempted, err)
	}
	_, newest, prev := liveVersions(deps, versionNumbers(vs))
	if prev == "" {
		return Outcome{}, &ToolError{Code: "nothing_to_roll_back", Message: fmt.Sprintf("%s has had only one version serving; there is nothing to go back to and nothing was changed", a.ScriptName)}
	}
	if _, err := s.Rollback(ctx, a.ScriptName, prev, "tollgate "+in.OperationID+": rollback"); err != nil {
		return Outcome{}, err
	}
	return Outcome{
		Result:  RollbackResult{ScriptName: a.ScriptName, Serving: prev, From: newest},
		Charged: in.MaxAmount,
		Summary: fmt.Sprintf("All traffic of %s back on version %s (from %s)", a.ScriptName, truncate(prev, 8), truncate(newest, 8)),
	}, nil
}

func (m rollbackWorker) Reconcile(ctx context.Context, s *cloudflare.Session, in ExecInput) (Outcome, bool, error) {
	a, err := m.decode(in.Args)
	if err != nil {
		return Outcome{}, false, err
	}
	deps, err := s.Deployments(ctx, a.ScriptName)
	if errors.Is(err, cloudflare.ErrNotFound) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, err
	}
	for _, d := range deps {
		if strings.Contains(d.Message, in.OperationID) && len(d.Traffic) == 1 {
			res := RollbackResult{ScriptName: a.ScriptName, Serving: d.Traffic[0].VersionID}
			return Outcome{Result: res, Charged: in.MaxAmount, Summary: "Rolled back " + a.ScriptName + " (found after restart)"}, true, nil
		}
	}
	return Outcome{}, false, nil
}

// rollbackWorkerApproval: a rollback moves traffic back at once, to code a
// human already let through; nothing of it always waits for a human, so
// there is no quorum probe.
var rollbackWorkerApproval = ApprovalTraits{
	Consequence: func(raw json.RawMessage) string {
		a, err := rollbackWorker{}.decode(raw)
		if err != nil || a.ScriptName == "" {
			return ""
		}
		return fmt.Sprintf("All production traffic of %s moves at once to the version that served before its latest deploy (a rollout in progress stops there); the newer version stays uploaded, and a new deploy_worker moves forward again.", a.ScriptName)
	},
}
