package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// recentDecided is how many decided requests the inbox lists under the pending ones.
const recentDecided = 10

type inboxData struct {
	Pending []approvals.Request
	Decided []approvals.Request
}

func (c *Console) inboxData(r *http.Request) (inboxData, error) {
	ctx, cancel := bg(r)
	defer cancel()
	pending, err := c.svc.List(ctx, approvals.StatePending)
	if err != nil {
		return inboxData{}, err
	}
	decided, err := c.svc.Recent(ctx, recentDecided, approvals.StateApproved, approvals.StateDenied, approvals.StateExpired, approvals.StateCancelled)
	if err != nil {
		return inboxData{}, err
	}
	return inboxData{Pending: pending, Decided: decided}, nil
}

func (c *Console) inbox(w http.ResponseWriter, r *http.Request, s session) error {
	d, err := c.inboxData(r)
	if err != nil {
		return err
	}
	v := viewFor(s, "Approvals", "inbox")
	v.Live, v.Data = "/console/inbox/pending", d
	c.render(w, r, http.StatusOK, "inbox.html", v)
	return nil
}

// inboxPending is the inbox's live part, fetched by the script on change.
func (c *Console) inboxPending(w http.ResponseWriter, r *http.Request, s session) error {
	d, err := c.inboxData(r)
	if err != nil {
		return err
	}
	v := viewFor(s, "", "inbox")
	v.Data = d
	c.renderTemplate(w, r, http.StatusOK, "inbox.html", "requests", v)
	return nil
}

// approvalData is everything the approval page shows.
type approvalData struct {
	R           approvals.Request
	Happens     []string
	Op          *Operation
	Headroom    []Headroom
	HeadroomErr string
	Change      *changeView
	ChangeErr   string
	Can         approvals.Abilities
	Mandate     approvals.MandateOffer // shown with Can.Approve
}

func (c *Console) approvalData(r *http.Request, s session, full bool) (approvalData, error) {
	ctx, cancel := bg(r)
	defer cancel()
	id := r.PathValue("id")
	if !approvals.ValidRequestID(id) {
		return approvalData{}, notFound("There is no approval request " + display.Text(id, 80) + ".")
	}
	req, err := c.svc.Get(ctx, id)
	if errors.Is(err, approvals.ErrNotFound) {
		return approvalData{}, notFound("There is no approval request " + id + ".")
	}
	if err != nil {
		return approvalData{}, err
	}
	d := approvalData{R: req, Can: c.svc.AbilitiesOf(ctx, s.approver, req)}
	if !full {
		return d, nil
	}
	if op, err := c.src.Operation(ctx, req.OperationID); err == nil {
		d.Op = &op
	}
	d.Happens = happens(req, d.Op)
	if d.Can.Approve {
		if ap, ok := c.svc.Approver(s.approver); ok {
			d.Mandate = c.svc.MandateOfferFor(ctx, &ap, req)
		}
	}
	if d.Headroom, err = c.src.Headroom(ctx, req); err != nil {
		d.HeadroomErr = "Budget headroom is unavailable: " + err.Error()
	}
	switch ch, err := c.src.ScriptChange(ctx, req); {
	case err != nil:
		d.ChangeErr = "The change could not be computed: " + err.Error()
	case ch != nil:
		d.Change = newChangeView(ch)
	}
	return d, nil
}

func (c *Console) approval(w http.ResponseWriter, r *http.Request, s session) error {
	d, err := c.approvalData(r, s, true)
	if err != nil {
		return err
	}
	v := viewFor(s, display.Text(d.R.Summary, 120), "inbox")
	v.Live, v.Data = "/console/approvals/"+d.R.ID+"/live", d
	switch r.URL.Query().Get("done") {
	case "approved":
		v.Notice = "Your approval is recorded."
	case "denied":
		v.Notice = "Your denial is recorded; the agent receives your reason."
	case "mandate":
		v.Notice = "Your approval is recorded, and agent " + display.Text(d.R.Agent, 100) + " has a standing approval: " + mandateIDPattern.FindString(r.URL.Query().Get("m")) + ". Revoke it with tollgate mandates revoke."
	case "frozen":
		v.Notice = "Agent " + display.Text(d.R.Agent, 100) + " is frozen: its mutating calls are denied and its pending approvals cancelled."
	}
	c.render(w, r, http.StatusOK, "approval.html", v)
	return nil
}

// approvalLive is the approval page's live part: state, votes and buttons.
func (c *Console) approvalLive(w http.ResponseWriter, r *http.Request, s session) error {
	d, err := c.approvalData(r, s, false)
	if err != nil {
		return err
	}
	v := viewFor(s, "", "inbox")
	v.Data = d
	c.renderTemplate(w, r, http.StatusOK, "approval.html", "decision", v)
	return nil
}

// happens says in words what approving r does: its summary, what its tool
// says approving it does (Operation.Consequence), and what it may cost.
func happens(r approvals.Request, op *Operation) []string {
	out := []string{display.Text(r.Summary, 500) + "."}
	switch {
	case op != nil && op.Consequence != "":
		out = append(out, display.Text(op.Consequence, 500))
	case r.Irreversible:
		out = append(out, "This cannot be undone once executed.")
	}
	charge := "It is charged at most " + display.Text(r.AmountText, 60)
	if op != nil && op.Basis != "" {
		charge += " (" + display.Text(op.Basis, 100) + ")"
	}
	out = append(out, charge+"; if the price at execution is higher, nothing is done.",
		fmt.Sprintf("An approval is used once, for exactly the arguments below (sha256 %s), and runs at once when %s.",
			display.Text(r.ArgsHash, 13), quorumText(max(r.Quorum, 1))))
	return out
}

func quorumText(n int) string {
	if n == 1 {
		return "one approver agrees"
	}
	return fmt.Sprintf("%d approvers agree", n)
}

// act records an approver's click: approve, deny (with a reason) or freeze.
func (c *Console) act(w http.ResponseWriter, r *http.Request, s session) error {
	id, action := r.PathValue("id"), r.PathValue("action")
	if !approvals.ValidRequestID(id) {
		return notFound("There is no approval request " + display.Text(id, 80) + ".")
	}
	ctx, cancel := bg(r)
	defer cancel()
	var err error
	done := ""
	switch action {
	case "approve":
		_, err = c.svc.Decide(ctx, approvals.VoteInput{RequestID: id, Approver: s.approver, Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove})
		done = "approved"
	case "deny":
		reason := strings.TrimSpace(r.PostFormValue("reason"))
		if reason == "" {
			return c.refuse(w, r, s, http.StatusBadRequest, "Give a reason to deny: the agent and the audit trail see it. Nothing changed.")
		}
		_, err = c.svc.Decide(ctx, approvals.VoteInput{RequestID: id, Approver: s.approver, Via: approvals.ViaWeb, Outcome: approvals.OutcomeDeny, Reason: reason})
		done = "denied"
	case "freeze":
		_, err = c.svc.Freeze(ctx, approvals.FreezeInput{RequestID: id, Approver: s.approver, Via: approvals.ViaWeb})
		done = "frozen"
	default:
		return notFound("The console has no action " + display.Text(action, 40) + ".")
	}
	if err != nil {
		status, text := refusal(err)
		return c.refuse(w, r, s, status, text)
	}
	http.Redirect(w, r, "/console/approvals/"+id+"?"+url.Values{"done": {done}}.Encode(), http.StatusSeeOther)
	return nil
}

// mandateIDPattern is a mandate id as ledger makes them.
var mandateIDPattern = regexp.MustCompile(`^man_[a-z0-9]{26}$`)

// approveMandate approves a request together with a standing approval for
// more like it (approvals.Service.ApproveWithMandate): both or neither. A
// form that cannot be read, or a mandate the policy, the owner rule or the
// quorum refuses, approves nothing and says why.
func (c *Console) approveMandate(w http.ResponseWriter, r *http.Request, s session) error {
	id := r.PathValue("id")
	if !approvals.ValidRequestID(id) {
		return notFound("There is no approval request " + display.Text(id, 80) + ".")
	}
	ctx, cancel := bg(r)
	defer cancel()
	req, err := c.svc.Get(ctx, id)
	if errors.Is(err, approvals.ErrNotFound) {
		return notFound("There is no approval request " + id + ".")
	}
	if err != nil {
		return err
	}
	spec, problems := mandateForm(r, req.Currency)
	if len(problems) > 0 {
		return c.refuse(w, r, s, http.StatusBadRequest, "Nothing was approved and no standing approval was given: "+strings.Join(problems, "; ")+".")
	}
	_, m, err := c.svc.ApproveWithMandate(ctx, approvals.VoteInput{RequestID: id, Approver: s.approver, Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove}, spec)
	var mr *approvals.MandateRefusedError
	switch {
	case errors.As(err, &mr):
		return c.refuse(w, r, s, http.StatusForbidden, "The standing approval was refused, so nothing was approved: "+display.Text(mr.Reason, 400)+". Approve this request alone, or change the form.")
	case errors.Is(err, approvals.ErrMandatesUnavailable):
		return c.refuse(w, r, s, http.StatusConflict, "Standing approvals are not enabled on this server, so nothing was approved.")
	case err != nil:
		status, text := refusal(err)
		return c.refuse(w, r, s, status, text+" No standing approval was given.")
	}
	http.Redirect(w, r, "/console/approvals/"+id+"?"+url.Values{"done": {"mandate"}, "m": {m.ID}}.Encode(), http.StatusSeeOther)
	return nil
}

// mandateForm reads the mandate form; problems name each bad field and what it allows.
func mandateForm(r *http.Request, currency string) (approvals.MandateSpec, []string) {
	var spec approvals.MandateSpec
	var problems []string
	field := func(name string) string { return strings.TrimSpace(r.PostFormValue(name)) }
	count, err := strconv.Atoi(field("count"))
	if err != nil || count < 1 || count > 100 {
		problems = append(problems, "the number of calls must be a whole number from 1 to 100")
	}
	hours, err := strconv.Atoi(field("hours"))
	if err != nil || hours < 1 || hours > 168 {
		problems = append(problems, "the expiry must be a whole number of hours from 1 to 168 (7 days)")
	}
	spec.Count, spec.Lifetime, spec.Pattern = count, time.Duration(hours)*time.Hour, strings.ToLower(field("resource"))
	if spec.Pattern == "" {
		problems = append(problems, "the resource pattern is required (an exact name, *.dev or shop-*)")
	}
	for _, f := range []struct {
		name, label string
		into        *money.Money
	}{{"max_per_call", "the most each call may cost", &spec.MaxPerCall}, {"max_total", "the most all calls may cost together", &spec.MaxTotal}} {
		m, err := money.ParseMoney(field(f.name), currency)
		if err != nil {
			problems = append(problems, f.label+" must be an amount like 15.00 (in "+currency+")")
			continue
		}
		*f.into = m
	}
	return spec, problems
}

// refuse shows the approval page again with why the click changed nothing.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, s session, status int, text string) error {
	d, err := c.approvalData(r, s, true)
	if err != nil {
		return err
	}
	v := viewFor(s, display.Text(d.R.Summary, 120), "inbox")
	v.Live, v.Data, v.Refused = "/console/approvals/"+d.R.ID+"/live", d, text
	c.render(w, r, status, "approval.html", v)
	return nil
}

// refusal maps a refused vote or freeze to a status and a fixed sentence.
func refusal(err error) (int, string) {
	var na *approvals.NotAllowedError
	switch {
	case errors.As(err, &na):
		return http.StatusForbidden, "Policy does not allow you to do this, so nothing changed: " + display.Text(na.Reason, 300)
	case errors.Is(err, approvals.ErrNotApprover):
		return http.StatusForbidden, "You are not a tollgate approver, so nothing changed."
	case errors.Is(err, approvals.ErrSelfApproval):
		return http.StatusForbidden, "You are the accountable owner of this agent, so another approver has to decide. Nothing changed."
	case errors.Is(err, approvals.ErrExpired):
		return http.StatusConflict, "This request expired; nothing was approved. The agent has to ask again."
	case errors.Is(err, approvals.ErrAlreadyDecided):
		return http.StatusConflict, "This request was already decided; nothing changed."
	case errors.Is(err, approvals.ErrDuplicateVote):
		return http.StatusConflict, "You already voted on this request; it needs another approver. Nothing changed."
	case errors.Is(err, approvals.ErrWithdrawn):
		return http.StatusConflict, "This request was withdrawn by the agent; nothing changed."
	case errors.Is(err, approvals.ErrCancelled):
		return http.StatusConflict, "This request was cancelled; nothing changed."
	case errors.Is(err, approvals.ErrFreezeUnavailable):
		return http.StatusConflict, "Freezing is not enabled on this server; use tollgate freeze --agent NAME."
	case errors.Is(err, approvals.ErrFreezeFailed):
		return http.StatusInternalServerError, "Freezing the agent failed, so it is not frozen: " + display.Text(err.Error(), 300)
	case errors.Is(err, approvals.ErrInvalidInput):
		return http.StatusBadRequest, "tollgate could not read this form: " + display.Text(err.Error(), 300)
	}
	return http.StatusInternalServerError, "tollgate could not record this (internal error), so nothing changed: " + display.Text(err.Error(), 300)
}

type operationsData struct {
	Operations []Operation
	Next       string
}

func (c *Console) operations(w http.ResponseWriter, r *http.Request, s session) error {
	ctx, cancel := bg(r)
	defer cancel()
	ops, next, err := c.src.Operations(ctx, r.URL.Query().Get("cursor"), 50)
	if err != nil {
		return err
	}
	v := viewFor(s, "Operations", "operations")
	v.Data = operationsData{Operations: ops, Next: next}
	c.render(w, r, http.StatusOK, "operations.html", v)
	return nil
}

type operationData struct {
	Op       Operation
	Timeline []TimelineEntry
	Approval *approvals.Request
}

func (c *Console) operation(w http.ResponseWriter, r *http.Request, s session) error {
	ctx, cancel := bg(r)
	defer cancel()
	id := r.PathValue("id")
	op, err := c.src.Operation(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return notFound("There is no operation " + display.Text(id, 80) + ".")
	}
	if err != nil {
		return err
	}
	tl, err := c.src.Timeline(ctx, id)
	if err != nil {
		return err
	}
	d := operationData{Op: op, Timeline: tl}
	if req, err := c.svc.ByOperation(ctx, id); err == nil {
		d.Approval = &req
	}
	v := viewFor(s, "Operation "+op.ID, "operations")
	v.Data = d
	c.render(w, r, http.StatusOK, "operation.html", v)
	return nil
}

type budgetsData struct {
	Budgets []budgetView
	Charts  []spendChart
	Since   time.Time
}

// spendDays is how far back the spend chart goes.
const spendDays = 30

func (c *Console) budgets(w http.ResponseWriter, r *http.Request, s session) error {
	ctx, cancel := bg(r)
	defer cancel()
	bs, err := c.src.Budgets(ctx)
	if err != nil {
		return err
	}
	today := c.now().UTC().Truncate(24 * time.Hour)
	since := today.AddDate(0, 0, -(spendDays - 1))
	days, err := c.src.DailySpend(ctx, since)
	if err != nil {
		return err
	}
	v := viewFor(s, "Budgets and spend", "budgets")
	v.Data = budgetsData{Budgets: budgetViews(bs), Charts: spendCharts(days, since, spendDays), Since: since}
	c.render(w, r, http.StatusOK, "budgets.html", v)
	return nil
}

func (c *Console) audit(w http.ResponseWriter, r *http.Request, s session) error {
	ctx, cancel := bg(r)
	defer cancel()
	st, err := c.src.AuditStatus(ctx)
	if err != nil {
		return err
	}
	v := viewFor(s, "Audit chain", "audit")
	v.Data = st
	c.render(w, r, http.StatusOK, "audit.html", v)
	return nil
}

type signInData struct {
	Approver  string
	Token     string
	ExpiresAt time.Time
}

// signInPage shows who a link signs in, without using it: link previews and
// mail scanners fetch pages, and must not spend the link.
func (c *Console) signInPage(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("t")
	l, err := c.lookLink(r.Context(), t)
	if err != nil {
		c.linkRefused(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "signin.html", view{Title: "Sign in", Data: signInData{Approver: l.approver, Token: t, ExpiresAt: l.expiresAt}})
}

// signIn uses the link and opens a session.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if !c.sameOrigin(r) {
		c.message(w, r, http.StatusForbidden, "Refused", "This sign-in was not sent from this console (Origin), so nobody was signed in.", "")
		return
	}
	t := r.PostFormValue("t")
	s, next, err := c.redeem(r.Context(), t)
	if err != nil {
		if errors.Is(err, ErrLinkUsed) || errors.Is(err, ErrLinkExpired) || errors.Is(err, approvals.ErrNotApprover) {
			// A real link, refused: worth a line in the audit trail (a link
			// used twice may have been copied).
			_ = c.svc.Record(r.Context(), EventSignInRefused, "web:anonymous", "", map[string]any{
				"link": hashOf(t)[:12], "reason": err.Error(), "remote": r.RemoteAddr,
			})
		}
		c.linkRefused(w, r, err)
		return
	}
	if err := c.svc.Record(r.Context(), EventSignedIn, "web:"+s.approver, "", map[string]any{
		"approver": s.approver, "link": hashOf(t)[:12], "session": hashOf(s.secret)[:12],
		"expires_at": s.expiresAt.Format(time.RFC3339), "remote": r.RemoteAddr,
	}); err != nil {
		// No session without a record of it.
		_ = c.endSession(r.Context(), s)
		c.fail(w, r, fmt.Errorf("audit sign-in: %w", err))
		return
	}
	c.log.InfoContext(r.Context(), "console sign-in", "approver", s.approver)
	c.setCookie(w, r, &s)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) linkRefused(w http.ResponseWriter, r *http.Request, err error) {
	text := "This is not a valid tollgate sign-in link."
	switch {
	case errors.Is(err, ErrLinkUsed):
		text = "This sign-in link was already used; each link signs in once."
	case errors.Is(err, ErrLinkExpired):
		text = "This sign-in link has expired."
	case errors.Is(err, approvals.ErrNotApprover):
		text = "This sign-in link belongs to someone who is no longer an approver."
	case !errors.Is(err, ErrLinkUnknown):
		c.log.ErrorContext(r.Context(), "sign-in link", "error", err.Error())
		text = "tollgate could not read this sign-in link."
	}
	c.message(w, r, http.StatusGone, "Sign-in refused", text+" Run tollgate approvals open for a new one, or use Review in console in Slack.", "")
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request, s session) error {
	if err := c.endSession(r.Context(), s); err != nil {
		return err
	}
	_ = c.svc.Record(r.Context(), EventSignedOut, "web:"+s.approver, "", map[string]any{"session": hashOf(s.secret)[:12]})
	c.setCookie(w, r, nil)
	c.message(w, r, http.StatusOK, "Signed out", "You are signed out of the tollgate console.", "")
	return nil
}
