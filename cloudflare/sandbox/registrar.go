package sandbox

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// checkResult is the registrar's verdict on one name.
type checkResult struct {
	Name        string   `json:"name"`
	Registrable bool     `json:"registrable"`
	Pricing     *pricing `json:"pricing,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Tier        string   `json:"tier,omitempty"`

	malformed bool
	ext       string
}

type pricing struct {
	Currency         string `json:"currency"`
	RegistrationCost string `json:"registration_cost"`
	RenewalCost      string `json:"renewal_cost"`
}

// validDomain checks the syntax of a fully qualified name in its ASCII
// (punycode) form: labels of letters, digits and inner hyphens, 1..63 octets,
// at most 253 in all, at least two labels.
func validDomain(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// price returns the price of an extension, SetPrice overrides first.
func (st *state) price(ext string) (priceRow, bool) {
	if p, ok := st.Prices[ext]; ok {
		return p, true
	}
	p, ok := defaultPrices[ext]
	return p, ok
}

// classify decides what domain-check says about name.
func (st *state) classify(raw string) checkResult {
	name := strings.TrimSuffix(strings.ToLower(raw), ".")
	res := checkResult{Name: raw}
	if !validDomain(name) {
		res.malformed = true
		return res
	}
	res.Name = name
	ext, _ := publicsuffix.PublicSuffix(name)
	// co.uk-style extensions the sandbox prices win over the suffix list's
	// view, so SetPrice can add any extension.
	if i := strings.IndexByte(name, '.'); i > 0 {
		if _, ok := st.price(name[i+1:]); ok {
			ext = name[i+1:]
		}
	}
	if ext == name || !strings.HasSuffix(name, "."+ext) || strings.Contains(strings.TrimSuffix(name, "."+ext), ".") {
		// A bare extension, or a name below a registrable domain.
		res.malformed = true
		return res
	}
	res.ext = ext
	price, supported := st.price(ext)
	switch {
	case notViaAPI[ext]:
		res.Reason = reasonNotViaAPI
	case disallowed[ext]:
		res.Reason = reasonDisallows
	case !supported:
		res.Reason = reasonNotSupport
	case premiumNames[name]:
		res.Reason, res.Tier = reasonPremium, "premium"
	case takenNames[name] || st.Registrations[name] != nil:
		res.Reason = reasonTaken
	default:
		res.Registrable, res.Tier = true, "standard"
		res.Pricing = &pricing{Currency: currency, RegistrationCost: price.Registration, RenewalCost: price.Renewal}
	}
	return res
}

func (s *Sandbox) handleDomainCheck(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	names, err := parseDomainCheck(body)
	if err != nil {
		writeBadBody(w, codeRegistrarInvalid, err)
		return
	}
	s.mu.Lock()
	out := make([]checkResult, 0, len(names))
	for _, n := range names {
		// Cloudflare omits malformed names from the answer.
		if res := s.st.classify(n); !res.malformed {
			out = append(out, res)
		}
	}
	s.mu.Unlock()
	writeResult(w, http.StatusOK, map[string]any{"domains": out})
}

// workflow kinds, chosen by the name's first-label prefix or the Prefer header.
const (
	kindSync    = ""
	kindAsync   = "async"
	kindSlow    = "slow"
	kindBlocked = "blocked"
	kindAction  = "action"
	kindFail    = "fail"
)

func workflowKind(domain string, preferAsync bool) string {
	switch {
	case strings.HasPrefix(domain, prefixSlow):
		return kindSlow
	case strings.HasPrefix(domain, prefixBlocked):
		return kindBlocked
	case strings.HasPrefix(domain, prefixAction):
		return kindAction
	case strings.HasPrefix(domain, prefixFail):
		return kindFail
	case preferAsync:
		return kindAsync
	}
	return kindSync
}

func (s *Sandbox) handleRegister(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseRegistrationNew(body)
	if err != nil {
		writeBadBody(w, codeRegistrarInvalid, err)
		return
	}
	now := s.clock().UTC().Truncate(time.Second)
	kind := workflowKind(strings.ToLower(req.Domain), strings.Contains(strings.ToLower(r.Header.Get("Prefer")), "respond-async"))
	s.mu.Lock()
	defer s.mu.Unlock()
	var wf *workflowRec
	err = s.commitLocked(func(st *state) error {
		res := st.classify(req.Domain)
		switch {
		case res.malformed:
			return failf(http.StatusBadRequest, codeRegistrarInvalid, "domain_name: %q is not a registrable domain name such as example.com", req.Domain)
		case res.Reason == reasonTaken:
			return failf(http.StatusConflict, codeDomainTaken, "%s: %s is already registered or reserved", reasonTaken, res.Name)
		case !res.Registrable:
			return failf(http.StatusBadRequest, codeNotRegistrable, "%s: %s cannot be registered through this API", res.Reason, res.Name)
		case len(st.Registrations) >= maxDomainsPerAccount:
			return failf(http.StatusBadRequest, codeRegistrarLimit, "the account already owns %d domains, the maximum", maxDomainsPerAccount)
		}
		regC, _ := parseCents(res.Pricing.RegistrationCost)
		renC, _ := parseCents(res.Pricing.RenewalCost)
		charge := formatCents(regC + int64(req.Years-1)*renC + s.surcharge)
		reg := &regRec{Domain: res.Name, Status: "registration_pending", AutoRenew: req.AutoRenew, Years: req.Years, CreatedAt: now}
		wf = &workflowRec{Domain: res.Name, Kind: kind, CreatedAt: now, UpdatedAt: now, Charge: charge}
		st.Registrations[res.Name] = reg
		st.Workflows[res.Name] = wf
		switch kind {
		case kindSync:
			st.succeed(wf, now)
		case kindAsync:
			wf.State = "pending"
		case kindBlocked:
			wf.State = "blocked"
		case kindAction:
			wf.State = "action_required"
		default:
			wf.State = "in_progress"
		}
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	status := http.StatusAccepted
	if wf.State == "succeeded" {
		status = http.StatusCreated
	}
	writeResult(w, status, s.workflowJSONLocked(r, wf))
}

// succeed completes a registration: active, expiring after its years,
// charged the price quoted when it was created, and on a zone of the
// account (Cloudflare Registrar only registers domains it also serves).
func (st *state) succeed(wf *workflowRec, now time.Time) {
	wf.State, wf.UpdatedAt = "succeeded", now
	if reg := st.Registrations[wf.Domain]; reg != nil {
		exp := reg.CreatedAt.AddDate(reg.Years, 0, 0)
		reg.Status, reg.ExpiresAt, reg.Charged = "active", &exp, wf.Charge
		st.addZone(wf.Domain, now)
	}
}

// advance moves a workflow one poll further along its script.
func (st *state) advance(wf *workflowRec, now time.Time) {
	if wf.State == "succeeded" || wf.State == "failed" || wf.State == "action_required" {
		return
	}
	wf.Polls++
	switch {
	case wf.Kind == kindAsync && wf.Polls >= 1,
		(wf.Kind == kindSlow || wf.Kind == kindBlocked) && wf.Polls >= 2:
		st.succeed(wf, now)
	case wf.Kind == kindFail && wf.Polls >= 2:
		wf.State, wf.UpdatedAt = "failed", now
		wf.ErrCode, wf.ErrMsg = "registry_rejected", "The registry rejected the registration request."
		// A failed registration leaves the name free again.
		delete(st.Registrations, wf.Domain)
	default:
		wf.UpdatedAt = now
	}
}

func (s *Sandbox) handleRegistrationStatus(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	domain := strings.ToLower(r.PathValue("domain"))
	now := s.clock().UTC().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	var wf *workflowRec
	err := s.commitLocked(func(st *state) error {
		wf = st.Workflows[domain]
		if wf == nil {
			return failf(http.StatusNotFound, codeRegistrationGone, "no registration workflow for %s", domain)
		}
		st.advance(wf, now)
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, s.workflowJSONLocked(r, wf))
}

func registrationJSON(reg *regRec) map[string]any {
	var exp any
	if reg.ExpiresAt != nil {
		exp = reg.ExpiresAt.Format(time.RFC3339)
	}
	return map[string]any{
		"domain_name":  reg.Domain,
		"status":       reg.Status,
		"auto_renew":   reg.AutoRenew,
		"created_at":   reg.CreatedAt.Format(time.RFC3339),
		"expires_at":   exp,
		"locked":       true,
		"privacy_mode": "redaction",
	}
}

func (s *Sandbox) workflowJSONLocked(r *http.Request, wf *workflowRec) map[string]any {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	resource := fmt.Sprintf("%s://%s%saccounts/%s/registrar/registrations/%s", scheme, r.Host, APIPrefix, accountID, wf.Domain)
	ctx := map[string]any{"domain_name": wf.Domain}
	var wfErr any
	switch wf.State {
	case "succeeded":
		if reg := s.st.Registrations[wf.Domain]; reg != nil {
			ctx["registration"] = registrationJSON(reg)
		}
		// The sandbox reports what it charged; Cloudflare's workflow context
		// documents no such field, so clients must treat it as optional.
		ctx["charge"] = map[string]string{"amount": wf.Charge, "currency": currency}
	case "action_required":
		ctx["action"] = "verify_registrant_email"
		ctx["confirmation_sent_to"] = "registrant@example.com"
	case "failed":
		wfErr = map[string]string{"code": wf.ErrCode, "message": wf.ErrMsg}
	}
	return map[string]any{
		"completed":  wf.State == "succeeded" || wf.State == "failed",
		"created_at": wf.CreatedAt.Format(time.RFC3339),
		"updated_at": wf.UpdatedAt.Format(time.RFC3339),
		"state":      wf.State,
		"links":      map[string]string{"self": resource + "/registration-status", "resource": resource},
		"context":    ctx,
		"error":      wfErr,
	}
}

func (s *Sandbox) handleGetRegistration(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	domain := strings.ToLower(r.PathValue("domain"))
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.st.Registrations[domain]
	if reg == nil {
		writeError(w, http.StatusNotFound, codeRegistrationGone, fmt.Sprintf("registration not found: the account does not own %s", domain))
		return
	}
	writeResult(w, http.StatusOK, registrationJSON(reg))
}

func (s *Sandbox) handleListRegistrations(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	q := r.URL.Query()
	perPage := 20
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, codeRegistrarInvalid, fmt.Sprintf("per_page: got %q; a whole number from 1 to 100", v))
			return
		}
		perPage = n
	}
	offset := 0
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			writeError(w, http.StatusBadRequest, codeRegistrarInvalid, "cursor: not a cursor this API returned; omit it for the first page")
			return
		}
		offset = n
	}
	sortBy := q.Get("sort_by")
	switch sortBy {
	case "", "registry_created_at", "registry_expires_at", "name":
	default:
		writeError(w, http.StatusBadRequest, codeRegistrarInvalid, fmt.Sprintf("sort_by: got %q; one of registry_created_at, registry_expires_at, name", sortBy))
		return
	}
	dir := q.Get("direction")
	if dir != "" && dir != "asc" && dir != "desc" {
		writeError(w, http.StatusBadRequest, codeRegistrarInvalid, fmt.Sprintf("direction: got %q; one of asc, desc", dir))
		return
	}
	s.mu.Lock()
	regs := make([]*regRec, 0, len(s.st.Registrations))
	for _, reg := range s.st.Registrations {
		regs = append(regs, reg)
	}
	less := func(a, b *regRec) bool {
		switch sortBy {
		case "name":
			return a.Domain < b.Domain
		case "registry_expires_at":
			ae, be := time.Time{}, time.Time{}
			if a.ExpiresAt != nil {
				ae = *a.ExpiresAt
			}
			if b.ExpiresAt != nil {
				be = *b.ExpiresAt
			}
			if !ae.Equal(be) {
				return ae.Before(be)
			}
		default:
			if !a.CreatedAt.Equal(b.CreatedAt) {
				return a.CreatedAt.Before(b.CreatedAt)
			}
		}
		return a.Domain < b.Domain
	}
	sort.Slice(regs, func(i, j int) bool {
		if dir == "desc" {
			return less(regs[j], regs[i])
		}
		return less(regs[i], regs[j])
	})
	page := []map[string]any{}
	for i := offset; i < len(regs) && len(page) < perPage; i++ {
		page = append(page, registrationJSON(regs[i]))
	}
	next := ""
	if offset+len(page) < len(regs) {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(offset + len(page))))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, envelope{Success: true, Result: page, ResultInfo: map[string]any{
		"count": len(page), "cursor": next, "per_page": perPage,
	}})
}
