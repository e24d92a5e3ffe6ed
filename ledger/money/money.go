// Package money is tollgate's exact amount type: integer micro-units of a
// currency, parsed from and formatted to plain decimals. It is a leaf package
// (no tollgate imports) so the ledger, approvals and tools share one Money.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MicrosPerUnit is the number of micro-units in one unit of a currency. Six decimals
// cover every price Cloudflare quotes (and every ISO 4217 minor unit) exactly.
const MicrosPerUnit = 1_000_000

// Money is an exact amount in integer micro-units of a currency. It is never a
// float: 8.57 USD is Money{Micros: 8_570_000, Currency: "USD"}.
type Money struct {
	Micros   int64  `json:"micros"`
	Currency string `json:"currency"` // ISO 4217 code, upper-case, e.g. "USD"
}

// moneyFormat is appended to every parse error so the caller learns what is accepted.
const moneyFormat = `expected a plain decimal with no sign, exponent or spaces and at most 6 decimals, e.g. "8.57", "10" or "0.000001"`

// ParseMoney parses an exact decimal string as Cloudflare sends prices ("8.57",
// "10", "0.000001") in the given currency. Signs, exponents, spaces, more than six
// decimals, amounts that do not fit in int64 micro-units, empty strings and
// currencies that are not three upper-case letters are errors that say what was
// wrong and what is accepted.
func ParseMoney(decimal, currency string) (Money, error) {
	if err := CheckCurrency(currency); err != nil {
		return Money{}, fmt.Errorf("parse money: %w", err)
	}
	micros, err := parseMicros(decimal)
	if err != nil {
		return Money{}, fmt.Errorf("parse money: %w", err)
	}
	return Money{Micros: micros, Currency: currency}, nil
}

func parseMicros(s string) (int64, error) {
	q := quote(s)
	if s == "" {
		return 0, fmt.Errorf("amount is empty; %s", moneyFormat)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c == '+' || c == '-':
			return 0, fmt.Errorf("amount %s has a sign; %s", q, moneyFormat)
		case c == 'e' || c == 'E':
			return 0, fmt.Errorf("amount %s has an exponent; %s", q, moneyFormat)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return 0, fmt.Errorf("amount %s contains whitespace; %s", q, moneyFormat)
		case c == ',':
			return 0, fmt.Errorf("amount %s contains a ','; use '.' for decimals and no thousands separator; %s", q, moneyFormat)
		default:
			return 0, fmt.Errorf("amount %s contains %q; %s", q, rune(c), moneyFormat)
		}
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	switch {
	case strings.Contains(frac, "."):
		return 0, fmt.Errorf("amount %s has more than one '.'; %s", q, moneyFormat)
	case whole == "":
		return 0, fmt.Errorf("amount %s has no digits before the '.'; %s", q, moneyFormat)
	case hasDot && frac == "":
		return 0, fmt.Errorf("amount %s has no digits after the '.'; %s", q, moneyFormat)
	case len(frac) > 6:
		return 0, fmt.Errorf("amount %s has %d decimals, more than 6; %s", q, len(frac), moneyFormat)
	}
	const maxWhole = math.MaxInt64 / MicrosPerUnit
	var units int64
	for i := 0; i < len(whole); i++ {
		units = units*10 + int64(whole[i]-'0')
		if units > maxWhole {
			return 0, fmt.Errorf("amount %s is too large (at most %s); %s", q, FormatMicros(math.MaxInt64, ""), moneyFormat)
		}
	}
	var fracMicros int64
	for i := 0; i < 6; i++ {
		fracMicros *= 10
		if i < len(frac) {
			fracMicros += int64(frac[i] - '0')
		}
	}
	if units > (math.MaxInt64-fracMicros)/MicrosPerUnit {
		return 0, fmt.Errorf("amount %s is too large (at most %s); %s", q, FormatMicros(math.MaxInt64, ""), moneyFormat)
	}
	return units*MicrosPerUnit + fracMicros, nil
}

// CheckCurrency accepts exactly three upper-case ASCII letters. It does not hold a
// list of ISO 4217 codes: the shape is what keeps budgets and quotes comparable.
func CheckCurrency(c string) error {
	ok := len(c) == 3
	for i := 0; ok && i < 3; i++ {
		ok = c[i] >= 'A' && c[i] <= 'Z'
	}
	if !ok {
		return fmt.Errorf("currency %s is not an ISO 4217 code; expected three upper-case letters such as \"USD\"", quote(c))
	}
	return nil
}

// quote quotes untrusted input for an error message, cut to a readable length.
func quote(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		return strconv.Quote(s[:maxLen]) + "…"
	}
	return strconv.Quote(s)
}

// FormatMicros renders micro-units with at least two decimals and no
// trailing zeros beyond them, followed by the currency when one is given:
// (10_000_000, "USD") -> "10.00 USD", (8_500_000, "") -> "8.50",
// (1, "") -> "0.000001".
func FormatMicros(v int64, currency string) string {
	var u uint64
	sign := ""
	if v < 0 {
		sign = "-"
		u = uint64(-(v + 1)) + 1 // math.MinInt64 has no positive int64
	} else {
		u = uint64(v)
	}
	whole, frac := u/MicrosPerUnit, u%MicrosPerUnit
	f := fmt.Sprintf("%06d", frac)
	f = strings.TrimRight(f, "0")
	for len(f) < 2 {
		f += "0"
	}
	out := sign + strconv.FormatUint(whole, 10) + "." + f
	if currency != "" {
		out += " " + currency
	}
	return out
}

// String renders the amount with its currency, e.g. "8.57 USD".
func (m Money) String() string { return FormatMicros(m.Micros, m.Currency) }

// Decimal renders the amount alone, e.g. "8.57"; ParseMoney(m.Decimal(), m.Currency)
// returns m for every non-negative m.
func (m Money) Decimal() string { return FormatMicros(m.Micros, "") }

// IsZero reports whether the amount is zero (in any currency).
func (m Money) IsZero() bool { return m.Micros == 0 }

// ErrCurrencyMismatch is wrapped by money arithmetic on two different currencies.
var ErrCurrencyMismatch = errors.New("currency mismatch")

// ErrOverflow is wrapped by money arithmetic whose result does not fit in int64
// micro-units.
var ErrOverflow = errors.New("amount overflows int64 micro-units")

// sameCurrency returns the currency of a result. A zero amount with no currency
// (the zero Money) takes the other side's, so sums can start from Money{}.
func sameCurrency(a, b Money) (string, error) {
	switch {
	case a.Currency == b.Currency:
		return a.Currency, nil
	case a.Currency == "" && a.Micros == 0:
		return b.Currency, nil
	case b.Currency == "" && b.Micros == 0:
		return a.Currency, nil
	}
	return "", fmt.Errorf("%s and %s: %w", a, b, ErrCurrencyMismatch)
}

// Add returns m + o. Different currencies and overflow are errors.
func (m Money) Add(o Money) (Money, error) {
	cur, err := sameCurrency(m, o)
	if err != nil {
		return Money{}, fmt.Errorf("add money: %w", err)
	}
	if (o.Micros > 0 && m.Micros > math.MaxInt64-o.Micros) || (o.Micros < 0 && m.Micros < math.MinInt64-o.Micros) {
		return Money{}, fmt.Errorf("add money: %s + %s: %w", m, o, ErrOverflow)
	}
	return Money{Micros: m.Micros + o.Micros, Currency: cur}, nil
}

// Sub returns m - o. Different currencies and overflow are errors; the result may
// be negative.
func (m Money) Sub(o Money) (Money, error) {
	cur, err := sameCurrency(m, o)
	if err != nil {
		return Money{}, fmt.Errorf("subtract money: %w", err)
	}
	if (o.Micros < 0 && m.Micros > math.MaxInt64+o.Micros) || (o.Micros > 0 && m.Micros < math.MinInt64+o.Micros) {
		return Money{}, fmt.Errorf("subtract money: %s - %s: %w", m, o, ErrOverflow)
	}
	return Money{Micros: m.Micros - o.Micros, Currency: cur}, nil
}

// Mul returns m × n (e.g. a yearly price times years). Overflow is an error.
func (m Money) Mul(n int64) (Money, error) {
	if m.Micros == 0 || n == 0 {
		return Money{Currency: m.Currency}, nil
	}
	r := m.Micros * n
	if r/n != m.Micros || (m.Micros == -1 && n == math.MinInt64) || (n == -1 && m.Micros == math.MinInt64) {
		return Money{}, fmt.Errorf("multiply money: %s × %d: %w", m, n, ErrOverflow)
	}
	return Money{Micros: r, Currency: m.Currency}, nil
}

// CheckAmount checks a Money that is about to be stored: a real currency and a
// non-negative amount. what names it in the error ("budget limit").
func CheckAmount(what string, m Money) error {
	if err := CheckCurrency(m.Currency); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if m.Micros < 0 {
		return fmt.Errorf("%s is %s; it must not be negative", what, m)
	}
	return nil
}
