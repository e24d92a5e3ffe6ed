package tools

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// ServerTool is one entry of the inventory: a tool and what the rest of
// tollgate needs to know about it. Every list of tool names — the tools
// registered on the MCP server, estimate_cost's actions, the executors and
// reconcilers of crash recovery, the rate-limitable actions — is derived
// from Inventory, so a new tool is one entry here and its own file.
type ServerTool struct {
	// Name is the MCP tool name.
	Name string
	// Kind and Action are the Cerbos resource kind and action the tool is
	// checked with (a mutation: on its arguments and on its plan). Kind is
	// empty when it depends on the arguments.
	Kind, Action string
	// New builds the MCP definition and handler on a Runner.
	New func(r Runner, cfg Config) Tool
	// Mutation, set for tools that change something at Cloudflare, plans,
	// executes (with a token holding exactly Mutation.Access) and
	// reconciles the tool's calls. Its calls are Operations in the ledger,
	// and velocity limits apply to them.
	Mutation func(cfg Config) Mutation
	// EstimateParams, set for a mutation that can cost money, makes it an
	// action of estimate_cost: the schema of its params there.
	EstimateParams func() *jsonschema.Schema
	// Approval, set for every mutation, is what the console, mandate offers
	// and the start-up quorum check need to know about the tool's approval
	// requests, so none of them branches on its name.
	Approval ApprovalTraits
}

// ApprovalTraits is what a mutating tool declares about its approvals.
type ApprovalTraits struct {
	// Consequence says in words what approving a call with these stored
	// (normalised) arguments does beyond its summary: what changes, when,
	// and whether and how it can be undone. Required; "" when the
	// arguments cannot be read (a generic sentence is shown instead).
	Consequence func(args json.RawMessage) string
	// ReplacedScript, for a tool that uploads a Worker module, names the
	// deployed script the module replaces, so the console shows the change
	// against the script live at Cloudflare; nil for other tools.
	ReplacedScript func(args json.RawMessage) (string, error)
	// MandatePattern derives the resource pattern of the mandate offered
	// with an approval ("more like this") from the call's resource name:
	// "launch.dev" → "*.dev". Nil offers the exact name.
	MandatePattern func(name string) string
	// MandateEnvironment is the environment a mandate of the tool made
	// without a request (tollgate mandates create) is checked with: the
	// only one a mandate may cover ("" for a tool without environments).
	MandateEnvironment string
	// QuorumProbe, set for a tool some of whose calls always wait for a
	// human, is the costliest such call, for the start-up check that the
	// configured approvers can meet its quorum.
	QuorumProbe func(ProbeEnv) QuorumProbe
}

// ProbeEnv is what quorum probes are built from: the agent's team, the
// policy's limits and the configured prices.
type ProbeEnv struct {
	Team string
	// TLD is one the policy lets agents register.
	TLD string
	// RegistrationCeiling is the policy's highest registration price.
	RegistrationCeiling money.Money
	Config              Config
}

// QuorumProbe is one kind of call the start-up quorum check asks the
// policy about. It always waits for a human, whatever the policy says.
type QuorumProbe struct {
	// Resource is the call's policy resource, checked with the tool's action.
	Resource authz.Resource
	Amount   money.Money
	// Irreversible is what the call's plan says (a registration, a
	// production deploy), as its approval request would carry it.
	Irreversible bool
}

// Find returns the inventory's entry for the tool named.
func Find(name string) (ServerTool, bool) {
	for _, t := range Inventory() {
		if t.Name == name {
			return t, true
		}
	}
	return ServerTool{}, false
}

// Inventory lists every tool, in the order they are listed to clients.
func Inventory() []ServerTool {
	return []ServerTool{
		{Name: checkDomainName, Kind: "domain", Action: "check", New: func(r Runner, _ Config) Tool { return CheckDomain(r) }},
		// estimate_cost checks the estimated tool's own kind.
		{Name: estimateCostName, Action: "estimate", New: EstimateCost},
		{
			Name: registerDomainName, Kind: "domain", Action: registerDomain{}.Action(), New: RegisterDomain,
			Mutation: func(cfg Config) Mutation { return registerDomain{cfg: cfg} },
			EstimateParams: func() *jsonschema.Schema {
				return estimateParamsSchema[RegisterDomainArgs](registerDomainName, registerSchema)
			},
			Approval: registerDomainApproval,
		},
		{
			Name: deployWorkerName, Kind: "worker_script", Action: deployWorker{}.Action(), New: DeployWorker,
			Mutation: func(cfg Config) Mutation { return deployWorker{cfg: cfg} },
			EstimateParams: func() *jsonschema.Schema {
				return estimateParamsSchema[DeployWorkerArgs](deployWorkerName, deploySchema)
			},
			Approval: deployWorkerApproval,
		},
		{
			Name: rollbackWorkerName, Kind: "worker_script", Action: rollbackWorker{}.Action(), New: RollbackWorker,
			Mutation: func(cfg Config) Mutation { return rollbackWorker{cfg: cfg} },
			Approval: rollbackWorkerApproval,
		},
		{
			Name: attachWorkerDomainName, Kind: workerDomainKind, Action: attachWorkerDomain{}.Action(), New: AttachWorkerDomain,
			Mutation: func(cfg Config) Mutation { return attachWorkerDomain{cfg: cfg} },
			Approval: attachWorkerDomainApproval,
		},
		{
			Name: detachWorkerDomainName, Kind: workerDomainKind, Action: detachWorkerDomain{}.Action(), New: DetachWorkerDomain,
			Mutation: func(cfg Config) Mutation { return detachWorkerDomain{cfg: cfg} },
			Approval: detachWorkerDomainApproval,
		},
		{Name: listDomainsName, Kind: workerDomainKind, Action: "read", New: func(r Runner, _ Config) Tool { return ListDomains(r) }},
		{Name: listWorkersName, Kind: "worker_script", Action: "read", New: func(r Runner, _ Config) Tool { return ListWorkers(r) }},
		{Name: getOperationName, Kind: "operation", Action: "read", New: func(r Runner, _ Config) Tool { return GetOperation(r) }},
		{Name: listOperationsName, Kind: "operation", Action: "read", New: func(r Runner, _ Config) Tool { return ListOperations(r) }},
		{Name: cancelOperationName, Kind: "operation", Action: "cancel", New: func(r Runner, _ Config) Tool { return CancelOperation(r) }},
		{Name: spendStatusName, Kind: "spend", Action: "read", New: func(r Runner, _ Config) Tool { return SpendStatus(r) }},
	}
}

// All returns every tool of the inventory, built on r.
func All(r Runner, cfg Config) []Tool {
	cfg = cfg.withDefaults()
	inv := Inventory()
	out := make([]Tool, 0, len(inv))
	for _, t := range inv {
		out = append(out, t.New(r, cfg))
	}
	return out
}

// Mutations returns the mutating tools by name, for the server's executor
// and crash recovery (which rebuild calls from stored Operations).
func Mutations(cfg Config) map[string]Mutation {
	cfg = cfg.withDefaults()
	out := map[string]Mutation{}
	for _, t := range Inventory() {
		if t.Mutation != nil {
			out[t.Name] = t.Mutation(cfg)
		}
	}
	return out
}

// RateLimited lists the tools velocity limits apply to (every mutating
// tool), in inventory order.
func RateLimited() []string {
	var out []string
	for _, t := range Inventory() {
		if t.Mutation != nil {
			out = append(out, t.Name)
		}
	}
	return out
}

// IsRateLimited reports whether velocity limits apply to the tool named.
func IsRateLimited(name string) bool { return slices.Contains(RateLimited(), name) }

// estimable lists the tools estimate_cost prices, in inventory order.
func estimable() []ServerTool {
	var out []ServerTool
	for _, t := range Inventory() {
		if t.EstimateParams != nil {
			out = append(out, t)
		}
	}
	return out
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// OrList joins names as "a, b or c", for messages that list tools.
func OrList(names []string) string { return orList(names) }
