package approvals

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/ledger/money"
)

// Action, block and callback ids of the approval message and the deny modal.
// They are part of the wire contract with Slack: keep them stable.
const (
	ActionIDApprove = "tollgate_approve"
	ActionIDDeny    = "tollgate_deny"
	ActionIDFreeze  = "tollgate_freeze"

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
	maxModalButton     = 24
	maxInputLabel      = 2000
	maxPlaceholder     = 150
	maxConfirmTitle    = 100
	maxConfirmText     = 300
	maxConfirmButton   = 30
	maxMessageText     = 3000 // fallback/notification text; Slack truncates far above, clients show far less
	maxPlainInputChars = 3000
)

// ellipsis marks text cut to fit a limit.
const ellipsis = "…"

// truncateRunes keeps s within max characters, ending with the ellipsis when cut.
func truncateRunes(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return s[:i] + ellipsis
		}
		n++
	}
	return s
}

// escapeRune returns r as mrkdwn text: Slack reads &, < and > as markup
// (mentions, links), so untrusted text must never carry them raw.
func escapeRune(r rune) string {
	switch r {
	case '&':
		return "&amp;"
	case '<':
		return "&lt;"
	case '>':
		return "&gt;"
	}
	return string(r)
}

// fitMrkdwn escapes untrusted text for mrkdwn and keeps the escaped result
// within max characters, never cutting an entity in half. Adjacent backticks
// are separated by zero-width spaces so the text cannot open or close a code
// block of its own.
func fitMrkdwn(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if max <= 0 {
		return ""
	}
	pieces := make([]string, 0, len(s))
	total := 0
	prev := rune(0)
	for _, r := range s {
		piece := escapeRune(r)
		if r == '`' && prev == '`' {
			piece = "\u200b`"
		}
		prev = r
		pieces = append(pieces, piece)
		total += utf8.RuneCountInString(piece)
	}
	if total <= max {
		return strings.Join(pieces, "")
	}
	var b strings.Builder
	n := 0
	for _, piece := range pieces {
		pl := utf8.RuneCountInString(piece)
		if n+pl > max-1 {
			break
		}
		b.WriteString(piece)
		n += pl
	}
	b.WriteString(ellipsis)
	return b.String()
}

// codeBlock renders untrusted text as a mrkdwn code block of at most max
// characters, fences included.
func codeBlock(s string, max int) string {
	if strings.HasPrefix(s, "`") {
		s = "\u200b" + s
	}
	if strings.HasSuffix(s, "`") {
		s += "\u200b"
	}
	if strings.TrimSpace(s) == "" {
		s = " "
	}
	return "```" + fitMrkdwn(s, max-6) + "```"
}

// inlineCode renders a short untrusted value (a name, an id) as inline code.
// Backticks cannot appear inside inline code, so they are replaced.
func inlineCode(s string, max int) string {
	if s == "" {
		return "(none)"
	}
	return "`" + fitMrkdwn(strings.ReplaceAll(s, "`", "\u02cb"), max-2) + "`"
}

// mrkdwnSection is a section whose text is built by the caller (already escaped).
func mrkdwnSection(blockID, text string) *slack.SectionBlock {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, true), nil, nil, slack.SectionBlockOptionBlockID(blockID))
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

// humanDuration renders d as "2h05m", "29m" or "40s".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
}

func viaLabel(via string) string {
	switch via {
	case ViaSlack:
		return "Slack"
	case ViaSocket:
		return "Slack (Socket Mode)"
	case ViaCLI:
		return "CLI"
	}
	return via
}

func amountText(r Request) string {
	if r.AmountText != "" {
		return r.AmountText
	}
	return money.FormatMicros(r.AmountMicros, r.Currency)
}

func shortHash(h string) string {
	if utf8.RuneCountInString(h) <= 16 {
		return h
	}
	return truncateRunes(h, 13)
}

// FallbackText is the message's plain notification text (push notifications,
// clients without Block Kit).
func FallbackText(r Request) string {
	var head string
	switch r.State {
	case StateApproved:
		head = "Approved"
	case StateDenied:
		head = "Denied"
	case StateExpired:
		head = "Expired"
	case StateCancelled:
		head = "Cancelled"
	default:
		head = "Approval needed"
	}
	summary := r.Summary
	if summary == "" {
		summary = r.Tool
	}
	return truncateRunes(fmt.Sprintf("%s: %s (agent %s, %s)", head, summary, r.Agent, amountText(r)), maxMessageText)
}

func headerText(r Request) string {
	switch r.State {
	case StateApproved:
		return ":white_check_mark: Approved: " + r.Tool
	case StateDenied:
		return ":no_entry: Denied: " + r.Tool
	case StateExpired:
		return ":hourglass: Expired: " + r.Tool
	case StateCancelled:
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
// Untrusted text is escaped and everything is cut to Slack's limits.
func RequestBlocks(r Request, now time.Time) []slack.Block {
	quorum := max(r.Quorum, 1)
	var blocks []slack.Block

	blocks = append(blocks, slack.NewHeaderBlock(
		slack.NewTextBlockObject(slack.PlainTextType, truncateRunes(headerText(r), maxHeaderText), true, false),
		slack.HeaderBlockOptionBlockID(BlockHeader)))

	summary := r.Summary
	if summary == "" {
		summary = r.Tool
	}
	summaryText := "*" + fitMrkdwn(summary, maxSectionText-200) + "*"
	if r.Irreversible {
		summaryText += "\n:warning: *Irreversible*: this cannot be undone once executed."
	}
	blocks = append(blocks, mrkdwnSection(BlockSummary, summaryText))

	agent := inlineCode(r.Agent, 200)
	if r.Team != "" {
		agent += " (team " + inlineCode(r.Team, 200) + ")"
	}
	owner := r.Owner
	if owner == "" {
		owner = "(none recorded)"
	}
	client := r.Client
	if client == "" {
		client = "(unknown)"
	}
	var expiry string
	switch {
	case r.State == StatePending && now.Before(r.ExpiresAt):
		expiry = slackDate(r.ExpiresAt) + " (in " + humanDuration(r.ExpiresAt.Sub(now)) + ")"
	case r.State == StatePending:
		expiry = slackDate(r.ExpiresAt) + " (due now)"
	default:
		expiry = slackDate(r.ExpiresAt)
	}
	field := func(label, value string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, truncateRunes("*"+label+"*\n"+value, maxFieldText), false, true)
	}
	facts := []*slack.TextBlockObject{
		field("Tool", inlineCode(r.Tool, 200)),
		field("Agent", agent),
		field("Accountable owner", fitMrkdwn(owner, 500)),
		field("MCP client", fitMrkdwn(client, 500)),
		field("Quoted cost (max)", fitMrkdwn(amountText(r), 200)),
		field("Expires", expiry),
		field("Approvals", fmt.Sprintf("%d of %d", r.Approvals(), quorum)),
	}
	blocks = append(blocks, slack.NewSectionBlock(nil, facts, nil, slack.SectionBlockOptionBlockID(BlockFacts)))

	var args strings.Builder
	for i, f := range r.Args {
		if i > 0 {
			args.WriteByte('\n')
		}
		args.WriteString(f.Label + ": " + f.Value)
	}
	if len(r.Args) == 0 {
		args.WriteString("(no arguments)")
	}
	const argsTitle = "*Arguments* (exact, normalised)\n"
	blocks = append(blocks, mrkdwnSection(BlockArgs, argsTitle+codeBlock(args.String(), maxSectionText-utf8.RuneCountInString(argsTitle))))

	if m := r.Module; m != nil {
		title := fmt.Sprintf("*Worker module* %s: %s bytes, sha256 %s\n",
			inlineCode(m.Name, 200), groupDigits(int64(m.Size)), inlineCode(m.SHA256, 100))
		lines := m.FirstLines
		if lines == "" {
			lines = "(empty)"
		}
		blocks = append(blocks, mrkdwnSection(BlockModule, title+codeBlock(lines, maxSectionText-utf8.RuneCountInString(title))))
	}

	if len(r.Headroom) > 0 {
		lines := make([]string, len(r.Headroom))
		for i, h := range r.Headroom {
			lines[i] = "• " + fitMrkdwn(h, 300)
		}
		blocks = append(blocks, mrkdwnSection(BlockHeadroom, linesWithin("*Budget headroom*", lines, maxSectionText)))
	}

	reason := r.Reason
	if strings.TrimSpace(reason) == "" {
		reason = "(no reason given)"
	}
	const reasonTitle = "*The agent's reason*\n"
	blocks = append(blocks, mrkdwnSection(BlockReason, reasonTitle+codeBlock(reason, maxSectionText-utf8.RuneCountInString(reasonTitle))))

	policy := r.Policy
	if policy == "" {
		policy = "(no policy detail recorded)"
	}
	blocks = append(blocks, mrkdwnSection(BlockPolicy, "*Policy decision*\n"+fitMrkdwn(policy, maxSectionText-30)))

	binding := fmt.Sprintf("Request %s · operation %s · single use, bound to args sha256 %s and at most %s",
		inlineCode(r.ID, 80), inlineCode(r.OperationID, 80), inlineCode(shortHash(r.ArgsHash), 20), fitMrkdwn(amountText(r), 100))
	blocks = append(blocks, slack.NewContextBlock(BlockBinding,
		slack.NewTextBlockObject(slack.MarkdownType, truncateRunes(binding, maxContextText), false, true)))

	if len(r.Votes) > 0 {
		lines := make([]string, 0, len(r.Votes))
		for _, v := range r.Votes {
			icon, verb := ":white_check_mark:", "approved"
			if v.Outcome == OutcomeDeny {
				icon, verb = ":no_entry:", "denied"
			}
			line := fmt.Sprintf("%s *%s* %s via %s at %s", icon, fitMrkdwn(v.Approver, 100), verb, viaLabel(v.Via), slackDate(v.At))
			if v.Reason != "" {
				line += ": " + fitMrkdwn(v.Reason, 1000)
			}
			lines = append(lines, line)
		}
		title := fmt.Sprintf("*Votes* (%d of %d approvals)", r.Approvals(), quorum)
		blocks = append(blocks, mrkdwnSection(BlockVotes, linesWithin(title, lines, maxSectionText)))
	}

	switch r.State {
	case StatePending:
		approve := slack.NewButtonBlockElement(ActionIDApprove, r.ID,
			slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Approve", maxButtonText), false, false)).WithStyle(slack.StylePrimary)
		deny := slack.NewButtonBlockElement(ActionIDDeny, r.ID,
			slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Deny", maxButtonText), false, false)).WithStyle(slack.StyleDanger)
		freeze := slack.NewButtonBlockElement(ActionIDFreeze, r.ID,
			slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Freeze agent", maxButtonText), false, false)).
			WithConfirm(slack.NewConfirmationBlockObject(
				slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Freeze agent "+r.Agent+"?", maxConfirmTitle), false, false),
				slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Every mutating call of "+r.Agent+" will be denied and its pending approvals cancelled until someone unfreezes it.", maxConfirmText), false, false),
				slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Freeze", maxConfirmButton), false, false),
				slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Cancel", maxConfirmButton), false, false),
			).WithStyle(slack.StyleDanger))
		blocks = append(blocks, slack.NewActionBlock(BlockActions, approve, deny, freeze))
	default:
		blocks = append(blocks, mrkdwnSection(BlockDecision, decisionText(r)))
	}

	if r.ResultText != "" {
		const resultTitle = "*Execution result*\n"
		blocks = append(blocks, mrkdwnSection(BlockResult, resultTitle+fitMrkdwn(r.ResultText, maxSectionText-utf8.RuneCountInString(resultTitle))))
	}

	if len(blocks) > maxBlocks {
		blocks = append(blocks[:maxBlocks-1], slack.NewContextBlock(BlockOverflow,
			slack.NewTextBlockObject(slack.MarkdownType, ellipsis+" more detail than a Slack message holds; see `tollgate approvals show "+r.ID+"`", false, true)))
	}
	return blocks
}

// decisionText says who decided, when and what, for a request that left pending.
func decisionText(r Request) string {
	var s string
	switch r.State {
	case StateApproved:
		s = fmt.Sprintf(":white_check_mark: *Approved* by %s at %s.", fitMrkdwn(approverNames(r.Votes, OutcomeApprove), 500), slackDate(r.DecidedAt))
		if r.Consumed {
			s += " The approval was used for its one execution at " + slackDate(r.ConsumedAt) + "."
		}
	case StateDenied:
		s = fmt.Sprintf(":no_entry: *Denied* by %s at %s: %s", fitMrkdwn(approverNames(r.Votes, OutcomeDeny), 500), slackDate(r.DecidedAt), fitMrkdwn(r.DecidedReason, 2000))
	case StateExpired:
		s = fmt.Sprintf(":hourglass: *Expired* at %s with %d of %d approvals. Nothing was approved; the agent must ask again.",
			slackDate(r.ExpiresAt), r.Approvals(), max(r.Quorum, 1))
	case StateCancelled:
		s = fmt.Sprintf(":ice_cube: *Cancelled* at %s: %s", slackDate(r.DecidedAt), fitMrkdwn(r.DecidedReason, 2000))
	default:
		s = "*" + fitMrkdwn(r.State, 50) + "*"
	}
	return truncateRunes(s, maxSectionText)
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
func DenyModal(r Request) slack.ModalViewRequest {
	summary := r.Summary
	if summary == "" {
		summary = r.Tool
	}
	text := fmt.Sprintf("*%s*\nAgent %s · %s · request %s",
		fitMrkdwn(summary, 1000), inlineCode(r.Agent, 200), fitMrkdwn(amountText(r), 100), inlineCode(r.ID, 80))
	input := slack.NewPlainTextInputBlockElement(
		slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Why is this denied? The agent and the audit trail see this.", maxPlaceholder), false, false),
		DenyReasonActionID)
	input.Multiline = true
	input.MinLength = 1
	input.MaxLength = maxPlainInputChars
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		CallbackID:      DenyModalCallbackID,
		PrivateMetadata: r.ID,
		Title:           slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Deny request", maxModalTitle), false, false),
		Submit:          slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Deny", maxModalButton), false, false),
		Close:           slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Cancel", maxModalButton), false, false),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			mrkdwnSection(BlockModalSummary, truncateRunes(text, maxSectionText)),
			slack.NewInputBlock(DenyReasonBlockID,
				slack.NewTextBlockObject(slack.PlainTextType, truncateRunes("Reason", maxInputLabel), false, false),
				nil, input),
		}},
	}
}
