package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// errMalformedJSON marks a body that is not JSON of the expected shape at
// all, answered with Cloudflare's 6007 rather than a field-level error.
var errMalformedJSON = errors.New(msgMalformedJSON)

// errTooLarge marks an upload over the Workers size limit (code 10027).
var errTooLarge = errors.New("script too large")

func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errMalformedJSON, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON value", errMalformedJSON)
	}
	return nil
}

// parseDomainCheck parses a domain-check body: {"domains": [1..20 names]}.
func parseDomainCheck(body []byte) ([]string, error) {
	var req struct {
		Domains *[]string `json:"domains"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.Domains == nil {
		return nil, errors.New("domains: required; send 1 to 20 fully qualified domain names")
	}
	n := len(*req.Domains)
	if n < 1 || n > 20 {
		return nil, fmt.Errorf("domains: got %d names; send 1 to 20 per request", n)
	}
	return *req.Domains, nil
}

// registrationRequest is a parsed registrations POST body.
type registrationRequest struct {
	Domain    string
	Years     int
	AutoRenew bool
}

// parseRegistrationNew parses a registrations POST body.
func parseRegistrationNew(body []byte) (registrationRequest, error) {
	var req struct {
		DomainName  *string          `json:"domain_name"`
		AutoRenew   *bool            `json:"auto_renew"`
		Years       *json.Number     `json:"years"`
		PrivacyMode *string          `json:"privacy_mode"`
		Contacts    *json.RawMessage `json:"contacts"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return registrationRequest{}, err
	}
	out := registrationRequest{Years: 1}
	if req.DomainName == nil || *req.DomainName == "" {
		return out, errors.New("domain_name: required; a fully qualified domain name such as example.com")
	}
	out.Domain = *req.DomainName
	if req.AutoRenew != nil {
		out.AutoRenew = *req.AutoRenew
	}
	if req.Years != nil {
		y, err := req.Years.Int64()
		if err != nil || y < 1 || y > 10 {
			return out, fmt.Errorf("years: got %s; a whole number of years from 1 to 10", req.Years.String())
		}
		out.Years = int(y)
	}
	if req.PrivacyMode != nil && *req.PrivacyMode != "redaction" && *req.PrivacyMode != "off" {
		return out, fmt.Errorf("privacy_mode: got %q; one of redaction, off", *req.PrivacyMode)
	}
	if req.Contacts != nil {
		var c struct {
			Registrant *struct {
				Email string `json:"email"`
			} `json:"registrant"`
		}
		if err := json.Unmarshal(*req.Contacts, &c); err != nil {
			return out, fmt.Errorf("contacts: %v; an object with an optional registrant", err)
		}
		if c.Registrant != nil && !strings.Contains(c.Registrant.Email, "@") {
			return out, errors.New("contacts.registrant.email: required; an email address")
		}
	}
	return out, nil
}

// tokenRequest is a parsed account-token create body.
type tokenRequest struct {
	Name     string
	Policies []policyRec
	// Zones are the zone ids the policies name, to be checked against the
	// account's zones.
	Zones     []string
	NotBefore *time.Time
	ExpiresOn *time.Time
	Condition conditionRec
}

// parseTokenCreate parses and validates an account-token create body. now is
// the sandbox clock, used to refuse tokens that would already be expired.
func parseTokenCreate(body []byte, now time.Time) (tokenRequest, error) {
	var req struct {
		Name     *string `json:"name"`
		Policies *[]struct {
			Effect           string `json:"effect"`
			PermissionGroups []struct {
				ID string `json:"id"`
			} `json:"permission_groups"`
			Resources map[string]json.RawMessage `json:"resources"`
		} `json:"policies"`
		NotBefore *time.Time `json:"not_before"`
		ExpiresOn *time.Time `json:"expires_on"`
		Condition *struct {
			RequestIP *struct {
				In    []string `json:"in"`
				NotIn []string `json:"not_in"`
			} `json:"request_ip"`
		} `json:"condition"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return tokenRequest{}, err
	}
	var out tokenRequest
	if req.Name == nil || *req.Name == "" || len(*req.Name) > 120 {
		return out, errors.New("name: required; 1 to 120 characters")
	}
	out.Name = *req.Name
	if req.Policies == nil || len(*req.Policies) == 0 {
		return out, errors.New("policies: required; at least one policy with permission_groups and resources")
	}
	for i, p := range *req.Policies {
		if p.Effect != "allow" && p.Effect != "deny" {
			return out, fmt.Errorf("policies[%d].effect: got %q; one of allow, deny", i, p.Effect)
		}
		if len(p.PermissionGroups) == 0 {
			return out, fmt.Errorf("policies[%d].permission_groups: required; at least one permission group id", i)
		}
		pol := policyRec{ID: fmt.Sprintf("%032x", i+1), Effect: p.Effect}
		var account, zones bool
		for j, g := range p.PermissionGroups {
			pg, ok := permissionGroupByID(g.ID)
			if !ok {
				return out, fmt.Errorf("policies[%d].permission_groups[%d].id: %q is not a permission group; list them at tokens/permission_groups", i, j, g.ID)
			}
			pol.PermissionGroups = append(pol.PermissionGroups, pgRef{ID: pg.ID, Name: pg.Name})
			if pg.Scopes[0] == scopeZone {
				zones = true
			} else {
				account = true
			}
		}
		res, err := parseResources(p.Resources)
		if err != nil {
			return out, fmt.Errorf("policies[%d].resources: %w", i, err)
		}
		if account && !res.account {
			return out, fmt.Errorf("policies[%d]: account permission groups need the account among the resources: {%q: \"*\"}", i, accountResource)
		}
		if zones && !res.allZones && len(res.zones) == 0 {
			return out, fmt.Errorf("policies[%d]: zone permission groups need zones among the resources: {%q: \"*\"} or {%q: {%q: \"*\"}}", i, zoneResourcePrefix+"<zone_id>", accountResource, allZonesResource)
		}
		pol.Resources = res.raw
		out.Zones = append(out.Zones, res.zones...)
		out.Policies = append(out.Policies, pol)
	}
	if req.ExpiresOn != nil {
		t := req.ExpiresOn.UTC()
		if !t.After(now) {
			return out, fmt.Errorf("expires_on: %s is not in the future", t.Format(time.RFC3339))
		}
		out.ExpiresOn = &t
	}
	if req.NotBefore != nil {
		t := req.NotBefore.UTC()
		if out.ExpiresOn != nil && !t.Before(*out.ExpiresOn) {
			return out, errors.New("not_before: must be before expires_on")
		}
		out.NotBefore = &t
	}
	if req.Condition != nil && req.Condition.RequestIP != nil {
		for _, list := range []struct {
			name string
			in   []string
			dst  *[]string
		}{
			{"in", req.Condition.RequestIP.In, &out.Condition.RequestIP.In},
			{"not_in", req.Condition.RequestIP.NotIn, &out.Condition.RequestIP.NotIn},
		} {
			for _, c := range list.in {
				p, err := parseCIDR(c)
				if err != nil {
					return out, fmt.Errorf("condition.request_ip.%s: %q is not an IP address or CIDR range", list.name, c)
				}
				*list.dst = append(*list.dst, p.String())
			}
		}
	}
	return out, nil
}

// resources is a policy's resources map, understood.
type resources struct {
	raw      map[string]any // as stored and echoed back
	account  bool           // the account itself
	allZones bool           // every zone of the account
	zones    []string       // these zones
}

// parseResources reads a policy's resources the way Cloudflare writes them
// for an account-owned token: the account ({"com.cloudflare.api.account.ID":
// "*"}), single zones ({"com.cloudflare.api.account.zone.ZONE": "*"}), or the
// account's zones nested under it ({"com.cloudflare.api.account.ID":
// {"com.cloudflare.api.account.zone.*": "*"}}, or named zones there).
func parseResources(in map[string]json.RawMessage) (resources, error) {
	out := resources{raw: map[string]any{}}
	if len(in) == 0 {
		return out, fmt.Errorf("required; {%q: \"*\"} for the account or {%q: \"*\"} for a zone", accountResource, zoneResourcePrefix+"<zone_id>")
	}
	for k, raw := range in {
		var star string
		if err := json.Unmarshal(raw, &star); err == nil {
			if star != "*" {
				return out, fmt.Errorf("%q: got %q; want \"*\"", k, star)
			}
			switch {
			case k == accountResource:
				out.account = true
			case strings.HasPrefix(k, zoneResourcePrefix) && isHex32(strings.TrimPrefix(k, zoneResourcePrefix)):
				out.zones = append(out.zones, strings.TrimPrefix(k, zoneResourcePrefix))
			default:
				return out, fmt.Errorf("%q is not allowed; an account-owned token may name %q or %q", k, accountResource, zoneResourcePrefix+"<zone_id>")
			}
			out.raw[k] = "*"
			continue
		}
		var nested map[string]string
		if err := json.Unmarshal(raw, &nested); err != nil || k != accountResource || len(nested) == 0 {
			return out, fmt.Errorf("%q: want \"*\", or under %q a map of zones to \"*\"", k, accountResource)
		}
		inner := map[string]any{}
		for zk, zv := range nested {
			if zv != "*" {
				return out, fmt.Errorf("%q[%q]: got %q; want \"*\"", k, zk, zv)
			}
			switch {
			case zk == allZonesResource:
				out.allZones = true
			case strings.HasPrefix(zk, zoneResourcePrefix) && isHex32(strings.TrimPrefix(zk, zoneResourcePrefix)):
				out.zones = append(out.zones, strings.TrimPrefix(zk, zoneResourcePrefix))
			default:
				return out, fmt.Errorf("%q[%q]: want %q or %q", k, zk, allZonesResource, zoneResourcePrefix+"<zone_id>")
			}
			inner[zk] = "*"
		}
		out.raw[k] = inner
	}
	return out, nil
}

// isHex32 reports whether s is 32 lowercase hex digits, the shape of
// account and zone ids.
func isHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// parseCIDR accepts a CIDR range or a bare address (as a single-host range).
func parseCIDR(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// scriptMetadata is the part of the upload metadata the sandbox validates.
type scriptMetadata struct {
	MainModule         string   `json:"main_module"`
	BodyPart           string   `json:"body_part"`
	CompatibilityDate  string   `json:"compatibility_date"`
	CompatibilityFlags []string `json:"compatibility_flags"`
	// Annotations label a version upload (workers/tag, workers/message).
	Annotations struct {
		Tag     string `json:"workers/tag"`
		Message string `json:"workers/message"`
	} `json:"annotations"`
}

// module is one uploaded file.
type module struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Content     []byte `json:"content"`
}

// scriptUpload is a parsed Workers script upload.
type scriptUpload struct {
	Meta    scriptMetadata
	Modules []module
}

// moduleTypes are the content types Cloudflare accepts for a main module.
var moduleTypes = map[string]bool{
	"application/javascript+module": true,
	"text/javascript+module":        true,
}

// partTypes are the content types Cloudflare accepts for any uploaded part.
var partTypes = map[string]bool{
	"application/javascript+module": true,
	"text/javascript+module":        true,
	"application/javascript":        true,
	"text/javascript":               true,
	"text/x-python":                 true,
	"text/x-python-requirement":     true,
	"application/wasm":              true,
	"text/plain":                    true,
	"application/octet-stream":      true,
	"application/source-map":        true,
}

var compatDateRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// parseScriptUpload parses a multipart Workers upload the way Cloudflare
// validates it: a JSON "metadata" part naming the main module, which must be
// among the uploaded parts, all parts within the size limit.
func parseScriptUpload(contentType string, body []byte, now time.Time) (scriptUpload, error) {
	var out scriptUpload
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return out, fmt.Errorf("content-type: got %q; a Worker upload is multipart/form-data with a boundary", contentType)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var metaSeen bool
	total := 0
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("multipart body: %v", err)
		}
		form, file := part.FormName(), part.FileName()
		content, err := io.ReadAll(io.LimitReader(part, maxScriptBytes+1))
		if err != nil {
			return out, fmt.Errorf("multipart part %q: %v", form, err)
		}
		if form == "metadata" && file == "" {
			if metaSeen {
				return out, errors.New("metadata: sent twice; send one metadata part")
			}
			metaSeen = true
			if err := json.Unmarshal(content, &out.Meta); err != nil {
				return out, fmt.Errorf("metadata: not valid JSON (%v); send {\"main_module\": \"worker.js\", \"compatibility_date\": \"YYYY-MM-DD\"}", err)
			}
			continue
		}
		name := file
		if name == "" {
			name = form
		}
		if name == "" {
			return out, errors.New("multipart part without a name; name each module part by its file name")
		}
		if seen[name] {
			return out, fmt.Errorf("module %q: uploaded twice", name)
		}
		seen[name] = true
		ct, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			ct = "application/octet-stream"
		}
		if !partTypes[ct] {
			return out, fmt.Errorf("module %q: content type %q is not accepted", name, ct)
		}
		total += len(content)
		if total > maxScriptBytes {
			return out, fmt.Errorf("%w: the upload exceeds the size limit of %d bytes", errTooLarge, maxScriptBytes)
		}
		out.Modules = append(out.Modules, module{Name: name, ContentType: ct, Content: content})
	}
	if !metaSeen {
		return out, errors.New("metadata: required; a JSON part named metadata with main_module")
	}
	m := out.Meta
	switch {
	case m.MainModule == "" && m.BodyPart == "":
		return out, errors.New("metadata.main_module: required; the file name of the uploaded ES module to run")
	case m.MainModule != "" && m.BodyPart != "":
		return out, errors.New("metadata: set main_module or body_part, not both")
	}
	entry := m.MainModule
	if entry == "" {
		entry = m.BodyPart
	}
	var found *module
	for i := range out.Modules {
		if out.Modules[i].Name == entry {
			found = &out.Modules[i]
		}
	}
	if found == nil {
		return out, fmt.Errorf("No such module %q: metadata names it as the entry point but no uploaded part has that file name", entry)
	}
	if m.MainModule != "" && !moduleTypes[found.ContentType] {
		return out, fmt.Errorf("main module %q: content type %q; an ES module is application/javascript+module", entry, found.ContentType)
	}
	if m.CompatibilityDate != "" {
		if !compatDateRE.MatchString(m.CompatibilityDate) {
			return out, fmt.Errorf("compatibility_date: got %q; a date as YYYY-MM-DD", m.CompatibilityDate)
		}
		d, err := time.Parse(time.DateOnly, m.CompatibilityDate)
		if err != nil {
			return out, fmt.Errorf("compatibility_date: %q is not a calendar date", m.CompatibilityDate)
		}
		if d.After(now.UTC()) {
			return out, fmt.Errorf("compatibility_date: %s is in the future; use today's date or earlier", m.CompatibilityDate)
		}
	}
	return out, nil
}
