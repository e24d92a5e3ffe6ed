package slack

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	slackapi "github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
	"github.com/tollgatehq/tollgate/ledger/money"
)

// Action, block and callback ids of the approval message and the deny modal.
// They are part of the wire contract with Slack: keep them stable.
const (
	ActionIDApprove = "tollgate_approve"
	ActionIDDeny    = "tollgate_deny"
	ActionIDFreeze  = "tollgate_freeze"
	ActionIDConsole = "tollgate_console"
	// ActionIDApproveMandate is Approve + allow N more: the vote and a
	// standing approval with the defaults the server derives again at the
	// click (the button carries only the request id).
	ActionIDApproveMandate = "tollgate_approve_mandate"

	BlockHeader   = "tg_header"
	BlockSummary  = "tg_summary"
	BlockFacts    = "tg_facts"
	BlockArgs     = "tg_args"
	BlockModule   = "tg_module"
	BlockHeadroom = "tg_headroom"
	BlockReason   = "tg_reason"
	BlockPolicy   = "tg_policy"
	BlockBinding  = "tg_binding"
	BlockVotes    = "tg_votes"
	BlockDecision = "tg_decision"
	BlockResult   = "tg_result"
	BlockActions  = "tg_actions"
	BlockOverflow = "tg_overflow"

	DenyModalCallbackID = "tollgate_deny_modal"
	DenyReasonBlockID   = "tg_deny_reason"
	DenyReasonActionID  = "tollgate_deny_reason"
	BlockModalSummary   = "tg_modal_summary"
)

// Slack's limits (Block Kit reference), in characters.
const (
	maxBlocks          = 50
	maxSectionText     = 3000
	maxFieldText       = 2000
	maxHeaderText      = 150
	maxButtonText      = 75
	maxContextText     = 2000
	maxModalTitle      = 24
	maxConfirmTitle    = 100
	maxConfirmText     = 300
	maxConfirmButton   = 30
	maxMessageText     = 3000 // fallback/notification text; Slack truncates far above, clients show far less
	maxPlainInputChars = 3000
)

// ellipsis marks text cut to fit a limit.
const ellipsis = display.Ellipsis

// mrkdwnSection is a section whose text is built by the caller (already escaped).
func mrkdwnSection(blockID, text string) *slackapi.SectionBlock {
	return slackapi.NewSectionBlock(slackapi.NewTextBlockObject(slackapi.MarkdownType, text, false, true), nil, nil, slackapi.SectionBlockOptionBlockID(blockID))
}

// linesWithin joins title and whole lines while they fit in max characters;
// the lines left out are counted in a closing line, so markup (dates, entities)
// is never cut in half.
func linesWithin(title string, lines []string, max int) string {
	n := utf8.RuneCountInString(title)
	total := n
	for _, l := range lines {
		total += utf8.RuneCountInString(l) + 1
	}
	if total <= max {
		return strings.Join(append([]string{title}, lines...), "\n")
	}
	const reserve = 24 // the "… and N more" line
	var b strings.Builder
	b.WriteString(title)
	for i, l := range lines {
		ln := utf8.RuneCountInString(l) + 1
		if n+ln+reserve > max {
			fmt.Fprintf(&b, "\n%s and %d more", ellipsis, len(lines)-i)
			return b.String()
		}
		b.WriteString("\n" + l)
		n += ln
	}
	return b.String()
}

// slackDate renders t with Slack's date formatting (shown in the reader's time
// zone) and a UTC fallback for clients that cannot.
func slackDate(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", t.Unix(), t.UTC().Format("2006-01-02 15:04 UTC"))
}

func amountText(r approvals.Request) string {
	if r.AmountText != "" {
		return r.AmountText
	}
	return money.FormatMicros(r.AmountMicros, r.Currency)
}

func shortHash(h string) string {
	if utf8.RuneCountInString(h) <= 16 {
		return h
	}
	return display.Text(h, 13)
}

// plainText is a plain_text object: Slack shows it as it is, with no
// formatting, mentions, links or :emoji: codes; the text is sanitised and
// cut to max.
func plainText(s string, max int) *slackapi.TextBlockObject {
	return slackapi.NewTextBlockObject(slackapi.PlainTextType, display.Text(s, max), false, false)
}

// summaryOf is the one-line summary, or the tool when there is none.
func summaryOf(r approvals.Request) string {
	if r.Summary == "" {
		return r.Tool
	}
	return r.Summary
}

// FallbackText is the message's plain notification text (push notifications,
// clients without Block Kit). Every part is sanitised: Slack escapes &, < and
// > of this text itself.
func FallbackText(r approvals.Request) string {
	var head string
	switch r.State {
	case approvals.StateApproved:
		head = "Approved"
	case approvals.StateDenied:
		head = "Denied"
	case approvals.StateExpired:
		head = "Expired"
	case approvals.StateCancelled:
		head = "Cancelled"
		if r.Withdrawn {
			head = "Withdrawn"
		}
	default:
		head = "Approval needed"
	}
	return display.Text(fmt.Sprintf("%s: %s (agent %s, %s)", head, display.Text(summaryOf(r), 1000),
		display.Text(r.Agent, 200), display.Text(amountText(r), 100)), maxMessageText)
}

func headerText(r approvals.Request) string {
	switch r.State {
	case approvals.StateApproved:
		return ":white_check_mark: Approved: " + r.Tool
	case approvals.StateDenied:
		return ":no_entry: Denied: " + r.Tool
	case approvals.StateExpired:
		return ":hourglass: Expired: " + r.Tool
	case approvals.StateCancelled:
		if r.Withdrawn {
			return ":leftwards_arrow_with_hook: Withdrawn by the agent: " + r.Tool
		}
		return ":ice_cube: Cancelled: " + r.Tool
	}
	return ":lock: Approval needed: " + r.Tool
}

// RequestBlocks builds the approval message for r as of now: what is asked
// (tool, agent and team, MCP client, exact arguments, Worker module), what it
// costs and what budget is left, why the agent asks, what policy decided, when
// it expires and how many approvals it has. While pending it carries the
// Approve, Deny and Freeze agent buttons; once decided it is rebuilt without
// them, saying who decided, when, the outcome and then the execution result.
//
// Text from the agent, its client or a voter (summary, client, arguments,
// module, reason, names, deny reasons, the execution result) only appears as
// plain_text or as inline code or a code block, sanitised by package display:
// it can never open a line, bold text, a heading, a link or a mention of its
// own. Everything is cut to Slack's limits.
func RequestBlocks(r approvals.Request, now time.Time, opts ...BlockOption) []slackapi.Block {
	var o blockOptions
	for _, opt := range opts {
		opt(&o)
	}
	quorum := max(r.Quorum, 1)
	var blocks []slackapi.Block

	blocks = append(blocks, slackapi.NewHeaderBlock(
		slackapi.NewTextBlockObject(slackapi.PlainTextType, display.Text(headerText(r), maxHeaderText), true, false),
		slackapi.HeaderBlockOptionBlockID(BlockHeader)))

	// plain_text with no emoji codes: the summary names what the agent asked
	// for, so nothing in it is read as markup.
	summary := display.Text(summaryOf(r), maxSectionText-100)
	if r.Irreversible {
		summary += "\n⚠ Irreversible: this cannot be undone once executed."
	}
	blocks = append(blocks, slackapi.NewSectionBlock(slackapi.NewTextBlockObject(slackapi.PlainTextType, summary, false, false), nil, nil,
		slackapi.SectionBlockOptionBlockID(BlockSummary)))

	agent := display.Code(r.Agent, 200)
	if r.Team != "" {
		agent += " (team " + display.Code(r.Team, 200) + ")"
	}
	owner := display.Code(r.Owner, 200)
	if r.Owner == "" {
		owner = "(none recorded)"
	}
	client := display.Code(r.Client, 500)
	if display.Clean(r.Client) == "" {
		client = "(unknown)"
	}
	var expiry string
	switch {
	case r.State == approvals.StatePending && now.Before(r.ExpiresAt):
		expiry = slackDate(r.ExpiresAt) + " (in " + display.Duration(r.ExpiresAt.Sub(now)) + ")"
	case r.State == approvals.StatePending:
		expiry = slackDate(r.ExpiresAt) + " (due now)"
	default:
		expiry = slackDate(r.ExpiresAt)
	}
	// Every value below is within its own cap, so a field never needs cutting.
	field := func(label, value string) *slackapi.TextBlockObject {
		return slackapi.NewTextBlockObject(slackapi.MarkdownType, "*"+label+"*\n"+value, false, true)
	}
	facts := []*slackapi.TextBlockObject{
		field("Tool", display.Code(r.Tool, 200)),
		field("Agent", agent),
		field("Accountable owner", owner),
		field("MCP client", client),
		field("Quoted cost (max)", display.Mrkdwn(amountText(r), 200)),
		field("Expires", expiry),
		field("Approvals", fmt.Sprintf("%d of %d", r.Approvals(), quorum)),
	}
	blocks = append(blocks, slackapi.NewSectionBlock(nil, facts, nil, slackapi.SectionBlockOptionBlockID(BlockFacts)))

	// One line per argument: a value cannot start a line of its own.
	args := make([]string, 0, len(r.Args))
	for _, f := range r.Args {
		args = append(args, display.Text(f.Label, 100)+": "+display.Text(f.Value, maxSectionText))
	}
	if len(r.Args) == 0 {
		args = append(args, "(no arguments)")
	}
	const argsTitle = "*Arguments* (exact, normalised)\n"
	blocks = append(blocks, mrkdwnSection(BlockArgs, argsTitle+display.CodeBlock(strings.Join(args, "\n"), maxSectionText-utf8.RuneCountInString(argsTitle))))

	if m := r.Module; m != nil {
		title := fmt.Sprintf("*Worker module* %s: %s bytes, sha256 %s\n",
			display.Code(m.Name, 200), groupDigits(int64(m.Size)), display.Code(m.SHA256, 100))
		lines := m.FirstLines
		if lines == "" {
			lines = "(empty)"
		}
		blocks = append(blocks, mrkdwnSection(BlockModule, title+display.CodeBlock(lines, maxSectionText-utf8.RuneCountInString(title))))
	}

	if len(r.Headroom) > 0 {
		lines := make([]string, len(r.Headroom))
		for i, h := range r.Headroom {
			lines[i] = "• " + display.Mrkdwn(h, 300)
		}
		blocks = append(blocks, mrkdwnSection(BlockHeadroom, linesWithin("*Budget headroom*", lines, maxSectionText)))
	}

	reason := display.Clean(r.Reason)
	if strings.TrimSpace(reason) == "" {
		reason = "(no reason given)"
	}
	const reasonTitle = "*The agent's reason*\n"
	blocks = append(blocks, mrkdwnSection(BlockReason, reasonTitle+display.CodeBlock(reason, maxSectionText-utf8.RuneCountInString(reasonTitle))))

	policy := r.Policy
	if policy == "" {
		policy = "(no policy detail recorded)"
	}
	blocks = append(blocks, mrkdwnSection(BlockPolicy, "*Policy decision*\n"+display.Mrkdwn(policy, maxSectionText-30)))

	binding := fmt.Sprintf("Request %s · operation %s · single use, bound to args sha256 %s and at most %s",
		display.Code(r.ID, 80), display.Code(r.OperationID, 80), display.Code(shortHash(r.ArgsHash), 20), display.Mrkdwn(amountText(r), 100))
	blocks = append(blocks, slackapi.NewContextBlock(BlockBinding, slackapi.NewTextBlockObject(slackapi.MarkdownType, binding, false, true)))

	if len(r.Votes) > 0 {
		lines := make([]string, 0, len(r.Votes))
		for _, v := range r.Votes {
			icon, verb := ":white_check_mark:", "approved"
			if v.Outcome == approvals.OutcomeDeny {
				icon, verb = ":no_entry:", "denied"
			}
			line := fmt.Sprintf("%s %s %s via %s at %s", icon, display.Code(v.Approver, 100), verb, approvals.ViaLabel(v.Via), slackDate(v.At))
			if display.Clean(v.Reason) != "" {
				line += ": " + display.Code(v.Reason, 1000)
			}
			lines = append(lines, line)
		}
		title := fmt.Sprintf("*Votes* (%d of %d approvals)", r.Approvals(), quorum)
		blocks = append(blocks, mrkdwnSection(BlockVotes, linesWithin(title, lines, maxSectionText)))
	}

	switch r.State {
	case approvals.StatePending:
		button := func(id, label string) *slackapi.ButtonBlockElement {
			return slackapi.NewButtonBlockElement(id, r.ID, slackapi.NewTextBlockObject(slackapi.PlainTextType, label, false, false))
		}
		approve := button(ActionIDApprove, "Approve").WithStyle(slackapi.StylePrimary)
		deny := button(ActionIDDeny, "Deny").WithStyle(slackapi.StyleDanger)
		agentName := display.Text(r.Agent, 60)
		freeze := button(ActionIDFreeze, "Freeze agent").
			WithConfirm(slackapi.NewConfirmationBlockObject(
				plainText("Freeze agent "+agentName+"?", maxConfirmTitle),
				plainText("Every mutating call of "+agentName+" will be denied and its pending approvals cancelled until someone unfreezes it.", maxConfirmText),
				plainText("Freeze", maxConfirmButton),
				plainText("Cancel", maxConfirmButton),
			).WithStyle(slackapi.StyleDanger))
		elements := []slackapi.BlockElement{approve}
		if m := o.mandate; m != nil {
			elements = append(elements, button(ActionIDApproveMandate, display.Text(MandateButtonText(*m), maxButtonText)).
				WithConfirm(slackapi.NewConfirmationBlockObject(
					plainText("Approve and allow more like it?", maxConfirmTitle),
					plainText(mandateConfirmText(r, *m), maxConfirmText),
					plainText("Approve + allow", maxConfirmButton),
					plainText("Cancel", maxConfirmButton),
				)))
		}
		elements = append(elements, deny, freeze)
		if o.console {
			// An interactive button, not a link: the click reaches tollgate
			// signed by Slack, and only the clicking approver gets a link.
			elements = append(elements, button(ActionIDConsole, "Review in console"))
		}
		blocks = append(blocks, slackapi.NewActionBlock(BlockActions, elements...))
	default:
		blocks = append(blocks, mrkdwnSection(BlockDecision, decisionText(r)))
	}

	if r.ResultText != "" {
		const resultTitle = "*Execution result*\n"
		blocks = append(blocks, mrkdwnSection(BlockResult, resultTitle+display.Code(r.ResultText, maxSectionText-utf8.RuneCountInString(resultTitle))))
	}

	if len(blocks) > maxBlocks {
		blocks = append(blocks[:maxBlocks-1], slackapi.NewContextBlock(BlockOverflow,
			slackapi.NewTextBlockObject(slackapi.MarkdownType, ellipsis+" more detail than a Slack message holds; see `tollgate approvals show "+display.Text(r.ID, 80)+"`", false, true)))
	}
	return blocks
}

// BlockOption changes what RequestBlocks builds.
type BlockOption func(*blockOptions)

type blockOptions struct {
	console bool
	mandate *approvals.MandateSpec
}

// WithMandateOffer adds Approve + allow N more (a standing approval of spec)
// to a pending request's buttons. Only offer it where the policy allows a
// mandate for the request (approvals.Service.MandateOfferFor).
func WithMandateOffer(spec approvals.MandateSpec) BlockOption {
	return func(o *blockOptions) { o.mandate = &spec }
}

// MandateButtonText is the button's label: "Approve + allow 5 more today,
// ≤ 12.18 USD each".
func MandateButtonText(m approvals.MandateSpec) string {
	when := "today"
	if m.Lifetime > 24*time.Hour {
		when = "within " + lifetimeText(m.Lifetime)
	}
	return fmt.Sprintf("Approve + allow %d more %s, ≤ %s each", m.Count, when, m.MaxPerCall)
}

func mandateConfirmText(r approvals.Request, m approvals.MandateSpec) string {
	return fmt.Sprintf("Approves this request and lets %s run %s on %s up to %d more times in the next %s: each up to %s, %s in all. Revoke it with tollgate mandates revoke.",
		display.Text(r.Agent, 40), display.Text(r.Tool, 30), display.Text(m.Pattern, 60), m.Count, lifetimeText(m.Lifetime), m.MaxPerCall, m.MaxTotal)
}

// lifetimeText is a mandate's lifetime for people: "24 hours", "3 days".
func lifetimeText(d time.Duration) string {
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= 2*time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	}
	return display.Duration(d)
}

// WithConsoleButton adds Review in console to a pending request's buttons.
func WithConsoleButton() BlockOption { return func(o *blockOptions) { o.console = true } }

// namesCode renders the names of the voters with outcome as inline code.
func namesCode(votes []approvals.Vote, outcome string) string {
	var names []string
	for _, v := range votes {
		if v.Outcome == outcome {
			names = append(names, display.Code(v.Approver, 100))
		}
	}
	if len(names) == 0 {
		return "(nobody recorded)"
	}
	return strings.Join(names, ", ")
}

// decisionText says who decided, when and what, for a request that left pending.
func decisionText(r approvals.Request) string {
	switch r.State {
	case approvals.StateApproved:
		s := fmt.Sprintf(":white_check_mark: *Approved* by %s at %s.", namesCode(r.Votes, approvals.OutcomeApprove), slackDate(r.DecidedAt))
		if r.Consumed {
			s += " The approval was used for its one execution at " + slackDate(r.ConsumedAt) + "."
		}
		return s
	case approvals.StateDenied:
		return fmt.Sprintf(":no_entry: *Denied* by %s at %s: %s", namesCode(r.Votes, approvals.OutcomeDeny), slackDate(r.DecidedAt), display.Code(r.DecidedReason, 2000))
	case approvals.StateExpired:
		return fmt.Sprintf(":hourglass: *Expired* at %s with %d of %d approvals. Nothing was approved; the agent must ask again.",
			slackDate(r.ExpiresAt), r.Approvals(), max(r.Quorum, 1))
	case approvals.StateCancelled:
		if r.Withdrawn {
			return fmt.Sprintf(":leftwards_arrow_with_hook: *Withdrawn by the agent* at %s: %s. Nothing will run; the hold is released.", slackDate(r.DecidedAt), display.Code(r.DecidedReason, 2000))
		}
		return fmt.Sprintf(":ice_cube: *Cancelled* at %s: %s", slackDate(r.DecidedAt), display.Code(r.DecidedReason, 2000))
	}
	return display.Code(r.State, 50)
}

// groupDigits renders 12345 as "12,345".
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// DenyModal builds the modal that asks a denying approver for a reason. The
// request id travels in private_metadata; the reason comes back in the
// view_submission under DenyReasonBlockID / DenyReasonActionID.
func DenyModal(r approvals.Request) slackapi.ModalViewRequest {
	text := fmt.Sprintf("%s\nAgent %s · %s · request %s",
		display.Code(summaryOf(r), 1000), display.Code(r.Agent, 200), display.Mrkdwn(amountText(r), 100), display.Code(r.ID, 80))
	input := slackapi.NewPlainTextInputBlockElement(
		slackapi.NewTextBlockObject(slackapi.PlainTextType, "Why is this denied? The agent and the audit trail see this.", false, false),
		DenyReasonActionID)
	input.Multiline = true
	input.MinLength = 1
	input.MaxLength = maxPlainInputChars
	return slackapi.ModalViewRequest{
		Type:            slackapi.VTModal,
		CallbackID:      DenyModalCallbackID,
		PrivateMetadata: r.ID,
		Title:           slackapi.NewTextBlockObject(slackapi.PlainTextType, "Deny request", false, false),
		Submit:          slackapi.NewTextBlockObject(slackapi.PlainTextType, "Deny", false, false),
		Close:           slackapi.NewTextBlockObject(slackapi.PlainTextType, "Cancel", false, false),
		Blocks: slackapi.Blocks{BlockSet: []slackapi.Block{
			mrkdwnSection(BlockModalSummary, text),
			slackapi.NewInputBlock(DenyReasonBlockID,
				slackapi.NewTextBlockObject(slackapi.PlainTextType, "Reason", false, false),
				nil, input),
		}},
	}
}
