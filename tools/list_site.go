package tools

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
)

const (
	listDomainsName = "list_domains"
	listWorkersName = "list_workers"
)

// ListDomainsArgs are the (empty) arguments of list_domains.
type ListDomainsArgs struct{}

// ListWorkersArgs are the (empty) arguments of list_workers.
type ListWorkersArgs struct{}

// HostnameView is a hostname and the Worker serving it.
type HostnameView struct {
	Hostname    string `json:"hostname"`
	Worker      string `json:"worker" jsonschema:"the Worker serving the hostname, as deployed (<name>-preview for a preview)"`
	Environment string `json:"environment"`
}

// DomainView is one domain (zone) of the account the caller may see.
type DomainView struct {
	Domain string `json:"domain"`
	Status string `json:"status" jsonschema:"the zone's status at Cloudflare: active, pending, initializing or moved"`
	// RegisteredByTeam says the caller's team registered it through tollgate.
	RegisteredByTeam bool           `json:"registered_by_team"`
	Hostnames        []HostnameView `json:"hostnames" jsonschema:"hostnames of the domain served by Workers"`
}

// ListDomainsResult is what list_domains returns.
type ListDomainsResult struct {
	Domains []DomainView `json:"domains"`
	// Hidden counts the domains and hostnames policy does not let you see.
	Hidden int `json:"hidden"`
}

// WorkerView is one Worker of the account the caller may see.
type WorkerView struct {
	Name        string   `json:"name"`
	Environment string   `json:"environment"`
	Hostnames   []string `json:"hostnames" jsonschema:"hostnames this Worker serves (Workers custom domains)"`
	ModifiedOn  string   `json:"modified_on,omitempty"`
}

// ListWorkersResult is what list_workers returns.
type ListWorkersResult struct {
	Workers []WorkerView `json:"workers"`
	// Hidden counts the Workers policy does not let you see.
	Hidden int `json:"hidden"`
}

// ListDomains is the read-only list_domains tool.
func ListDomains(r Runner) Tool {
	tool := mcp.NewTool(listDomainsName,
		mcp.WithToolTitle("List the domains you may see and what serves them"),
		mcp.WithDescription("Lists the account's domains (zones) that policy lets you see — under the default policy "+
			"those your team registered through tollgate — with every hostname on them served by a Worker and which "+
			"Worker serves it, and whether your team registered each domain. Read-only and free; asks Cloudflare."),
		withInput[ListDomainsArgs](nil),
		withOutput[ListDomainsResult](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, _ ListDomainsArgs) (ListDomainsResult, error) {
		return listDomains(ctx, r)
	})}
}

func listDomains(ctx context.Context, r Runner) (ListDomainsResult, error) {
	zones, err := r.Zones(ctx)
	if err != nil {
		return ListDomainsResult{}, upstreamError("zone list", err)
	}
	cds, err := r.CustomDomains(ctx, cloudflare.DomainFilter{})
	if err != nil {
		return ListDomainsResult{}, upstreamError("custom-domain list", err)
	}
	// One check per zone and per hostname, in one policy call.
	checks := make([]authz.Check, 0, len(zones)+len(cds))
	registered := map[string]bool{}
	for _, z := range zones {
		reg, err := r.TeamSucceeded(ctx, registerDomainName, "domain:"+z.Name)
		if err != nil {
			return ListDomainsResult{}, err
		}
		registered[z.Name] = reg
		checks = append(checks, authz.Check{Resource: authz.Resource{Kind: workerDomainKind, ID: z.Name, Attr: map[string]any{
			"hostname": z.Name, "domain": z.Name, "apex": true, "zone": z.Name, "registered_by_team": reg,
		}}, Actions: []string{"read"}})
	}
	for _, d := range cds {
		checks = append(checks, authz.Check{Resource: authz.Resource{Kind: workerDomainKind, ID: d.Hostname, Attr: map[string]any{
			"hostname": d.Hostname, "domain": d.ZoneName, "apex": d.Hostname == d.ZoneName, "zone": d.ZoneName,
			"registered_by_team": registered[d.ZoneName], "environment": environmentOf(d.Script),
			"script": strings.TrimSuffix(d.Script, previewSuffix), "current_script": d.Script,
		}}, Actions: []string{"read"}})
	}
	var decisions []authz.Decision
	if len(checks) > 0 {
		decisions = r.AuthorizeAll(ctx, checks)
	}
	allowed := func(i int) bool { return i < len(decisions) && decisions[i].Allowed }
	out := ListDomainsResult{Domains: []DomainView{}}
	byZone := map[string]int{}
	for i, z := range zones {
		if !allowed(i) {
			out.Hidden++
			continue
		}
		byZone[z.Name] = len(out.Domains)
		out.Domains = append(out.Domains, DomainView{Domain: z.Name, Status: z.Status, RegisteredByTeam: registered[z.Name], Hostnames: []HostnameView{}})
	}
	for j, d := range cds {
		k, ok := byZone[d.ZoneName]
		if !allowed(len(zones)+j) || !ok {
			out.Hidden++
			continue
		}
		out.Domains[k].Hostnames = append(out.Domains[k].Hostnames, HostnameView{Hostname: d.Hostname, Worker: d.Script, Environment: environmentOf(d.Script)})
	}
	for i := range out.Domains {
		slices.SortFunc(out.Domains[i].Hostnames, func(a, b HostnameView) int { return strings.Compare(a.Hostname, b.Hostname) })
	}
	return out, nil
}

// ListWorkers is the read-only list_workers tool.
func ListWorkers(r Runner) Tool {
	tool := mcp.NewTool(listWorkersName,
		mcp.WithToolTitle("List the Workers you may see and the hostnames they serve"),
		mcp.WithDescription("Lists the account's Workers that policy lets you see — under the default policy those "+
			"named with your team's prefix, previews included — with the hostnames each serves (Workers custom "+
			"domains) and when it was last changed. Read-only and free; asks Cloudflare."),
		withInput[ListWorkersArgs](nil),
		withOutput[ListWorkersResult](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, _ ListWorkersArgs) (ListWorkersResult, error) {
		ws, err := r.Workers(ctx)
		if err != nil {
			return ListWorkersResult{}, upstreamError("Worker list", err)
		}
		cds, err := r.CustomDomains(ctx, cloudflare.DomainFilter{})
		if err != nil && !errors.Is(err, cloudflare.ErrNotFound) {
			return ListWorkersResult{}, upstreamError("custom-domain list", err)
		}
		checks := make([]authz.Check, len(ws))
		for i, w := range ws {
			checks[i] = authz.Check{Resource: authz.Resource{Kind: "worker_script", ID: w.Name, Attr: map[string]any{
				"environment": environmentOf(w.Name),
			}}, Actions: []string{"read"}}
		}
		var decisions []authz.Decision
		if len(checks) > 0 {
			decisions = r.AuthorizeAll(ctx, checks)
		}
		out := ListWorkersResult{Workers: []WorkerView{}}
		for i, w := range ws {
			if i >= len(decisions) || !decisions[i].Allowed {
				out.Hidden++
				continue
			}
			v := WorkerView{Name: w.Name, Environment: environmentOf(w.Name), Hostnames: []string{}}
			if !w.ModifiedOn.IsZero() {
				v.ModifiedOn = w.ModifiedOn.UTC().Format("2006-01-02T15:04:05Z")
			}
			for _, d := range cds {
				if d.Script == w.Name {
					v.Hostnames = append(v.Hostnames, d.Hostname)
				}
			}
			slices.Sort(v.Hostnames)
			out.Workers = append(out.Workers, v)
		}
		return out, nil
	})}
}
