package tools

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger/money"
)

const checkDomainName = "check_domain"

// CheckDomainArgs are the arguments of check_domain.
type CheckDomainArgs struct {
	Domain string `json:"domain" jsonschema:"the domain to check, e.g. example.dev; internationalised names are accepted and converted to punycode"`
}

// CheckDomainResult is the structured output of check_domain.
type CheckDomainResult struct {
	Domain      string  `json:"domain" jsonschema:"the normalised ASCII (punycode) name"`
	Unicode     string  `json:"unicode" jsonschema:"the name as humans read it"`
	Registrable bool    `json:"registrable" jsonschema:"whether register_domain can register it through the API"`
	Reason      string  `json:"reason,omitempty" jsonschema:"why it cannot be registered, when not registrable"`
	Tier        string  `json:"tier,omitempty" jsonschema:"standard or premium"`
	PerYear     *Amount `json:"registration_per_year,omitempty" jsonschema:"the price of the first year"`
	RenewalYear *Amount `json:"renewal_per_year,omitempty" jsonschema:"the price of each renewal year"`
}

// CheckDomain is the read-only check_domain tool: the registrar's live
// domain-check for one name, after normalisation and a policy check.
func CheckDomain(r Runner) Tool {
	tool := mcp.NewTool(checkDomainName,
		mcp.WithToolTitle("Check a domain's availability and price"),
		mcp.WithDescription("Checks whether a domain can be registered through Cloudflare Registrar right now and what "+
			"it costs per year (first year and renewals), from the registrar's live domain-check. Read-only and free: "+
			"nothing is reserved or bought. The name is normalised first (lower case, IDN to punycode) and refused if it "+
			"is not a registrable name under a public suffix or mixes scripts like a look-alike. Use it before "+
			"estimate_cost or register_domain."),
		withInput[CheckDomainArgs](func(p map[string]*jsonschema.Schema) {
			p["domain"].MinLength = ptr(1)
			p["domain"].MaxLength = ptr(maxNameOctets + 1)
		}),
		withOutput[CheckDomainResult](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(true),
	)
	return Tool{Tool: tool, Handler: typed(func(ctx context.Context, _ mcp.CallToolRequest, a CheckDomainArgs) (CheckDomainResult, error) {
		d, err := NormalizeDomain(a.Domain)
		if err != nil {
			return CheckDomainResult{}, err
		}
		res := authz.Resource{Kind: "domain", ID: d.FQDN, Attr: map[string]any{"tld": d.TLD, "sld": d.SLD}}
		if dec := r.Authorize(ctx, res, "check"); !dec.Allowed {
			return CheckDomainResult{}, PolicyDenied("check", res, dec)
		}
		q, err := r.Quote(ctx, d.FQDN)
		if err != nil {
			return CheckDomainResult{}, upstreamError("domain-check", err)
		}
		out := CheckDomainResult{Domain: d.FQDN, Unicode: d.Unicode, Registrable: q.Registrable, Tier: q.Tier}
		if !q.Registrable {
			out.Reason = registrarReason(q.Reason)
			return out, nil
		}
		reg, renew, err := quotePrices(q.DomainCheck)
		if err != nil {
			return CheckDomainResult{}, err
		}
		out.PerYear, out.RenewalYear = &reg, &renew
		return out, nil
	})}
}

func quotePrices(q cloudflare.DomainCheck) (Amount, Amount, error) {
	reg, err := money.ParseMoney(q.RegistrationCost, q.Currency)
	if err != nil {
		return Amount{}, Amount{}, fmt.Errorf("registrar price for %s: %w", q.Name, err)
	}
	renew, err := money.ParseMoney(q.RenewalCost, q.Currency)
	if err != nil {
		return Amount{}, Amount{}, fmt.Errorf("registrar renewal price for %s: %w", q.Name, err)
	}
	return AmountOf(reg), AmountOf(renew), nil
}

// registrarReason puts the registrar's reason code into words.
func registrarReason(code string) string {
	switch code {
	case "extension_not_supported_via_api":
		return "extension_not_supported_via_api: Cloudflare sells this extension only in the dashboard, not through the API"
	case "extension_not_supported":
		return "extension_not_supported: Cloudflare Registrar does not sell this extension"
	case "extension_disallows_registration":
		return "extension_disallows_registration: the registry has frozen new registrations on this extension"
	case "domain_premium":
		return "domain_premium: premium-priced names cannot be registered through the API"
	case "domain_unavailable":
		return "domain_unavailable: the name is already registered or reserved"
	case "":
		return "the registrar did not say why"
	}
	return code
}

// PolicyDenied is the refusal for a policy deny, with the policy's reasons.
func PolicyDenied(action string, res authz.Resource, d authz.Decision) *ToolError {
	code, what := "policy_denied", "Policy denies"
	if d.Unavailable {
		code, what = "policy_unavailable", "Denied because the policy engine is unavailable:"
	}
	msg := fmt.Sprintf("%s %s on %s:%s", what, action, res.Kind, res.ID)
	for _, r := range d.Reasons {
		msg += "\n- " + r
	}
	return &ToolError{Code: code, Message: msg}
}

func upstreamError(what string, err error) *ToolError {
	var te *ToolError
	if errors.As(err, &te) {
		return te // already a refusal in words (e.g. a rate limit)
	}
	return &ToolError{Code: "cloudflare_error", Message: fmt.Sprintf("Cloudflare %s failed: %v. Nothing was reserved or changed; try again later.", what, err)}
}
