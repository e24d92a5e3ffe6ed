package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mark3labs/mcp-go/server"
	"github.com/tollgatehq/tollgate/authz"

	"github.com/tollgatehq/tollgate/ledger"
)

// normalizer is implemented by the mutating tools: it turns raw arguments
// into a Call. estimate relaxes what only the real call needs (a reason).
type normalizer interface {
	Mutation
	normalize(raw json.RawMessage, estimate bool, now time.Time) (Call, error)
}

// mutationHandler is the MCP handler shared by the mutating tools.
func mutationHandler(r Runner, m normalizer) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		call, err := m.normalize(rawArguments(req), false, r.Now())
		if err != nil {
			return errorResult(err)
		}
		var token mcp.ProgressToken
		if req.Params.Meta != nil {
			token = req.Params.Meta.ProgressToken
		}
		call.Progress = r.Progress(ctx, token)
		view, err := r.Mutate(ctx, m, call)
		if err != nil {
			return errorResult(err)
		}
		res, err := operationResult(view)
		if err == nil && linksAllowed(server.RequestProtocolVersion(ctx)) {
			res.Content = append(res.Content, operationLink(view))
		}
		return res, err
	}
}

// operationResult is an Operation as a tool result: an error result (still
// carrying the structured Operation) when it ended without succeeding.
func operationResult(v OperationView) (*mcp.CallToolResult, error) {
	text, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode operation: %w", err)
	}
	switch ledger.State(v.Status) {
	case ledger.StateFailed, ledger.StateDenied, ledger.StateExpired, ledger.StateCancelled:
		res := mcp.NewToolResultError(fmt.Sprintf("Operation %s %s (%s): %s\n\n%s", v.OperationID, v.Status, v.ErrorCode, v.Error, text))
		res.StructuredContent = v
		return res, nil
	}
	return mcp.NewToolResultStructured(v, string(text)), nil
}

// operationLink is the resource_link to a mutating call's Operation: read it,
// or subscribe to it to hear of every change without polling.
func operationLink(v OperationView) mcp.ResourceLink {
	return mcp.NewResourceLink(OperationURI(v.OperationID), "operation "+v.OperationID,
		"This call's operation ("+v.Status+"): read it for its current state, or subscribe to it to be told of every change.",
		"application/json")
}

// linksAllowed reports whether a protocol version has resource_link content
// (2025-06-18 and later; an older client's schema would reject it).
func linksAllowed(version string) bool {
	return version == "" || version >= mcp.ProtocolVersion20250618
}

const estimateCostName = "estimate_cost"

// EstimateCostArgs are the arguments of estimate_cost.
type EstimateCostArgs struct {
	Action string          `json:"action" jsonschema:"the tool you are considering (see the schema enum)"`
	Params json.RawMessage `json:"params" jsonschema:"the arguments you would pass to that tool; an estimate needs no reason or idempotency_key"`
}

// estimateParamsSchema is a mutating tool's input schema as estimate_cost's
// params for it: the same arguments, with those an estimate does not need
// optional.
func estimateParamsSchema[T any](tool string, refine func(map[string]*jsonschema.Schema)) *jsonschema.Schema {
	var s jsonschema.Schema
	if err := json.Unmarshal(inputSchema[T](refine), &s); err != nil {
		panic(err)
	}
	s.Title = "params for " + tool
	s.Required = slices.DeleteFunc(s.Required, func(name string) bool { return slices.Contains(estimateOptional, name) })
	return &s
}

// EstimateCost is the read-only estimate_cost tool: price, policy decision,
// budget headroom and approval need for a call, with no side effects. Its
// actions are the inventory's tools with EstimateParams.
func EstimateCost(r Runner, cfg Config) Tool {
	muts, names := estimateMutations(cfg)
	var params []*jsonschema.Schema
	for _, t := range estimable() {
		params = append(params, t.EstimateParams())
	}
	tool := mcp.NewTool(estimateCostName,
		mcp.WithToolTitle("Estimate a call's cost, policy decision and approval need"),
		mcp.WithDescription("Tells you, without buying, reserving or deploying anything, what "+orList(names)+
			" would do with these arguments (params: that tool's arguments; no reason needed): the amount it would spend (from the registrar's live quote or "+
			"the configured Workers price book) with a breakdown, whether policy allows it and why not, the headroom in "+
			"every budget that applies and whether the call would be blocked, and whether a human must approve it or a standing approval (mandate) would cover it. "+
			"Free and read-only."),
		withInput[EstimateCostArgs](func(p map[string]*jsonschema.Schema) {
			p["action"].Description = "the tool you are considering: " + orList(names)
			enum := make([]any, len(names))
			for i, n := range names {
				enum[i] = n
			}
			p["action"].Enum = enum
			p["params"].Type, p["params"].Types = "object", nil
			// One schema per action: the arguments of whichever tool
			// action names.
			p["params"].AnyOf = params
		}),
		withOutput[EstimateResult](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, a EstimateCostArgs) (EstimateResult, error) {
		m, call, err := normalizeEstimate(muts, names, a, r.Now())
		if err != nil {
			return EstimateResult{}, err
		}
		res, err := r.Estimate(ctx, m, call)
		res.Arguments = call.Args
		return res, err
	})}
}

// estimateMutations are estimate_cost's actions, by name, and their names in
// inventory order.
func estimateMutations(cfg Config) (map[string]normalizer, []string) {
	muts := map[string]normalizer{}
	var names []string
	for _, t := range estimable() {
		n, ok := t.Mutation(cfg).(normalizer)
		if !ok {
			panic("tools: " + t.Name + " has EstimateParams but does not normalise its arguments")
		}
		muts[t.Name] = n
		names = append(names, t.Name)
	}
	return muts, names
}

// EstimateChecks are the policy checks an estimate_cost call with args sends
// in one CheckResources call once its price is at hand (env answers the
// quote): the arguments alone for "estimate", and the plan, with its price,
// for the real action; and the plan they were built from (price,
// irreversibility). `tollgate load --compare-pdp` sends exactly these
// straight to the PDP, to measure it beside tollgate in the same run.
func EstimateChecks(ctx context.Context, cfg Config, env PlanEnv, args EstimateCostArgs) ([]authz.Check, Plan, error) {
	muts, names := estimateMutations(cfg.withDefaults())
	m, call, err := normalizeEstimate(muts, names, args, env.Now())
	if err != nil {
		return nil, Plan{}, err
	}
	pre, err := m.PreResource(call.Args)
	if err != nil {
		return nil, Plan{}, err
	}
	plan, err := m.Plan(ctx, env, call.Args, call.Blob)
	if err != nil {
		return nil, Plan{}, err
	}
	return []authz.Check{
		{Resource: pre, Actions: []string{"estimate"}},
		{Resource: plan.Resource, Actions: []string{m.Action()}},
	}, plan, nil
}

// normalizeEstimate resolves the action and normalises its params as that
// tool would, naming nested problems params.<field>.
func normalizeEstimate(muts map[string]normalizer, names []string, a EstimateCostArgs, now time.Time) (normalizer, Call, error) {
	m, ok := muts[a.Action]
	if !ok {
		return nil, Call{}, inputErr("action", orList(names), "%q is not a tool that costs money", truncate(a.Action, 40))
	}
	if len(a.Params) == 0 || string(a.Params) == "null" {
		return nil, Call{}, inputErr("params", "an object with the arguments of "+a.Action, "is required")
	}
	call, err := m.normalize(a.Params, true, now)
	if err != nil {
		return nil, Call{}, prefixInput("params.", err)
	}
	call.Progress = func(string) {}
	return m, call, nil
}

// prefixInput qualifies field names of nested arguments ("params.years").
func prefixInput(prefix string, err error) error {
	switch e := err.(type) {
	case *InputError:
		c := *e
		c.Field = prefix + c.Field
		return &c
	case InputErrors:
		out := make(InputErrors, len(e))
		for i, one := range e {
			c := *one
			c.Field = prefix + strings.TrimPrefix(c.Field, prefix)
			out[i] = &c
		}
		return out
	}
	return err
}

const getOperationName = "get_operation"

// MaxOperationWait caps how long get_operation may long-poll.
const MaxOperationWait = 50 * time.Second

// GetOperationArgs are the arguments of get_operation.
type GetOperationArgs struct {
	OperationID string `json:"operation_id" jsonschema:"the operation_id a register_domain or deploy_worker call returned"`
	WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"wait up to this many seconds for the operation to change state (long poll); 0 returns at once"`
	History     bool   `json:"history,omitempty" jsonschema:"also return every step of the operation's story (policy decisions, holds, approval votes, tokens, Cloudflare requests); off by default to keep answers small"`
}

// GetOperation is the read-only get_operation tool.
func GetOperation(r Runner) Tool {
	maxWait := int(MaxOperationWait / time.Second)
	tool := mcp.NewTool(getOperationName,
		mcp.WithToolTitle("Get an operation's state and result"),
		mcp.WithDescription("Returns one of your operations: its state (e.g. awaiting_approval, succeeded, denied, "+
			"expired), the arguments it is bound to, the amount reserved and charged, the approval's progress, and the "+
			"Cloudflare result or the error; with history=true also every step of its story. With wait_seconds it waits "+
			"for the operation to change before answering, so you can resume a call that was waiting for a human; "+
			"subscribing to the resource tollgate://operations/{operation_id} tells you of every change instead. Read-only."),
		withInput[GetOperationArgs](func(p map[string]*jsonschema.Schema) {
			p["operation_id"].Pattern = `^op_[a-z2-7]{26}$`
			p["wait_seconds"].Minimum, p["wait_seconds"].Maximum = ptr(0.0), ptr(float64(maxWait))
			p["wait_seconds"].Default = json.RawMessage("0")
			p["history"].Default = json.RawMessage("false")
		}),
		withOutput[OperationView](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, a GetOperationArgs) (OperationView, error) {
		var errs InputErrors
		if !strings.HasPrefix(a.OperationID, "op_") || len(a.OperationID) > 64 {
			errs = append(errs, inputErr("operation_id", "an id like op_abc… from a register_domain or deploy_worker result", "%q is not an operation id", truncate(a.OperationID, 70)))
		}
		if a.WaitSeconds < 0 || a.WaitSeconds > maxWait {
			errs = append(errs, inputErr("wait_seconds", fmt.Sprintf("0 to %d", maxWait), "%d is out of range", a.WaitSeconds))
		}
		if len(errs) > 0 {
			return OperationView{}, errs
		}
		return r.Operation(ctx, a.OperationID, time.Duration(a.WaitSeconds)*time.Second, a.History)
	})}
}

const (
	listOperationsName = "list_operations"
	defaultPageSize    = 20
)

// ListOperationsArgs are the arguments of list_operations.
type ListOperationsArgs struct {
	Status string `json:"status,omitempty" jsonschema:"only operations in this state"`
	Cursor string `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page"`
	Limit  *int   `json:"limit,omitempty" jsonschema:"page size"`
}

var operationStates = []any{"planned", "authorized", "reserved", "awaiting_approval", "approved", "executing", "succeeded", "failed", "denied", "expired", "cancelled", "in_doubt"}

// ListOperations is the read-only list_operations tool.
func ListOperations(r Runner) Tool {
	tool := mcp.NewTool(listOperationsName,
		mcp.WithToolTitle("List your recent operations"),
		mcp.WithDescription("Lists the operations you started, newest first, paginated (limit up to 100, default 20; "+
			"pass next_cursor as cursor for the next page), optionally only those in one state such as "+
			"awaiting_approval. Read-only."),
		withInput[ListOperationsArgs](func(p map[string]*jsonschema.Schema) {
			p["status"].Enum = operationStates
			p["limit"].Type, p["limit"].Types = "integer", nil
			p["limit"].Minimum, p["limit"].Maximum = ptr(1.0), ptr(100.0)
			p["limit"].Default = json.RawMessage("20")
			p["cursor"].MaxLength = ptr(200)
		}),
		withOutput[OperationList](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, a ListOperationsArgs) (OperationList, error) {
		var errs InputErrors
		if a.Status != "" && !slices.Contains(operationStates, any(a.Status)) {
			errs = append(errs, inputErr("status", "one of planned, authorized, reserved, awaiting_approval, approved, executing, succeeded, failed, denied, expired, cancelled, in_doubt", "%q is not a state", truncate(a.Status, 40)))
		}
		if a.Limit == nil {
			a.Limit = ptr(defaultPageSize)
		} else if *a.Limit < 1 || *a.Limit > 100 {
			errs = append(errs, inputErr("limit", "1 to 100", "%d is out of range", *a.Limit))
		}
		if len(a.Cursor) > 200 {
			errs = append(errs, inputErr("cursor", "the next_cursor of a previous page", "is too long"))
		}
		if len(errs) > 0 {
			return OperationList{}, errs
		}
		return r.Operations(ctx, a)
	})}
}

const spendStatusName = "spend_status"

// SpendStatusArgs are the (empty) arguments of spend_status.
type SpendStatusArgs struct{}

// SpendStatus is the read-only spend_status tool.
func SpendStatus(r Runner) Tool {
	tool := mcp.NewTool(spendStatusName,
		mcp.WithToolTitle("Show your budgets, limits and freezes"),
		mcp.WithDescription("Shows what you, your team and everyone spent and hold today, this month and in total "+
			"(with or without budgets); every budget that applies to you (your agent, your team, global): limit, spent, "+
			"held by operations in progress, remaining and when each window resets; your velocity limits and how much "+
			"of each is used; and any freeze that stops your spending. Read-only."),
		withInput[SpendStatusArgs](nil),
		withOutput[SpendStatusResult](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, _ SpendStatusArgs) (SpendStatusResult, error) {
		return r.SpendStatus(ctx)
	})}
}
