package money

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseMoney(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, cur string
		want    int64
		errHas  string // "" means success
	}{
		{"8.57", "USD", 8_570_000, ""},
		{"10", "USD", 10_000_000, ""},
		{"0.000001", "USD", 1, ""},
		{"0", "EUR", 0, ""},
		{"0.5", "USD", 500_000, ""},
		{"007.50", "USD", 7_500_000, ""},
		{"9223372036854.775807", "USD", math.MaxInt64, ""},
		{"9223372036854", "USD", 9_223_372_036_854_000_000, ""},
		{"9223372036854.775808", "USD", 0, "too large"},
		{"9223372036855", "USD", 0, "too large"},
		{"99999999999999999999999", "USD", 0, "too large"},
		{"", "USD", 0, "empty"},
		{"-1", "USD", 0, "sign"},
		{"+1", "USD", 0, "sign"},
		{"1e3", "USD", 0, "exponent"},
		{"1E3", "USD", 0, "exponent"},
		{" 1", "USD", 0, "whitespace"},
		{"1 ", "USD", 0, "whitespace"},
		{"1.0000001", "USD", 0, "more than 6"},
		{"1,50", "USD", 0, "','"},
		{".5", "USD", 0, "no digits before"},
		{"5.", "USD", 0, "no digits after"},
		{"1.2.3", "USD", 0, "more than one"},
		{"NaN", "USD", 0, "contains"},
		{"Inf", "USD", 0, "contains"},
		{"0x10", "USD", 0, "contains"},
		{"١", "USD", 0, "contains"}, // Arabic-Indic digit one
		{"8.57", "usd", 0, "three upper-case"},
		{"8.57", "US", 0, "three upper-case"},
		{"8.57", "", 0, "three upper-case"},
		{"8.57", "USDT", 0, "three upper-case"},
	}
	for _, tt := range tests {
		t.Run(tt.in+"/"+tt.cur, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMoney(tt.in, tt.cur)
			if tt.errHas != "" {
				if err == nil {
					t.Fatalf("ParseMoney(%q, %q) = %v, want error containing %q", tt.in, tt.cur, got, tt.errHas)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("error %q does not contain %q", err, tt.errHas)
				}
				// Every error says what is accepted.
				if !strings.Contains(err.Error(), "expected") {
					t.Fatalf("error %q does not say what is accepted", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMoney(%q, %q): %v", tt.in, tt.cur, err)
			}
			if got.Micros != tt.want || got.Currency != tt.cur {
				t.Fatalf("ParseMoney(%q, %q) = %+v, want %d %s", tt.in, tt.cur, got, tt.want, tt.cur)
			}
		})
	}
}

func TestMoneyFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		micros  int64
		str     string
		decimal string
	}{
		{8_570_000, "8.57 USD", "8.57"},
		{10_000_000, "10.00 USD", "10.00"},
		{8_500_000, "8.50 USD", "8.50"},
		{1, "0.000001 USD", "0.000001"},
		{0, "0.00 USD", "0.00"},
		{1_234_500, "1.2345 USD", "1.2345"},
		{-8_570_000, "-8.57 USD", "-8.57"},
		{math.MaxInt64, "9223372036854.775807 USD", "9223372036854.775807"},
		{math.MinInt64, "-9223372036854.775808 USD", "-9223372036854.775808"},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatInt(tt.micros, 10), func(t *testing.T) {
			t.Parallel()
			m := Money{Micros: tt.micros, Currency: "USD"}
			if got := m.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := m.Decimal(); got != tt.decimal {
				t.Errorf("Decimal() = %q, want %q", got, tt.decimal)
			}
		})
	}
}

func TestMoneyArithmetic(t *testing.T) {
	t.Parallel()
	eur := Money{Micros: 1, Currency: "EUR"}
	max := Money{Micros: math.MaxInt64, Currency: "USD"}
	min := Money{Micros: math.MinInt64, Currency: "USD"}
	tests := []struct {
		name    string
		op      func() (Money, error)
		want    Money
		wantErr error
	}{
		{"add", func() (Money, error) { return usd("8.57").Add(usd("1.43")) }, usd("10"), nil},
		{"add zero value", func() (Money, error) { return Money{}.Add(usd("1")) }, usd("1"), nil},
		{"add to zero value", func() (Money, error) { return usd("1").Add(Money{}) }, usd("1"), nil},
		{"add mismatch", func() (Money, error) { return usd("1").Add(eur) }, Money{}, ErrCurrencyMismatch},
		{"add overflow", func() (Money, error) { return max.Add(Money{Micros: 1, Currency: "USD"}) }, Money{}, ErrOverflow},
		{"add negative overflow", func() (Money, error) { return min.Add(Money{Micros: -1, Currency: "USD"}) }, Money{}, ErrOverflow},
		{"sub", func() (Money, error) { return usd("10").Sub(usd("8.57")) }, usd("1.43"), nil},
		{"sub below zero", func() (Money, error) { return usd("1").Sub(usd("2")) }, Money{Micros: -1_000_000, Currency: "USD"}, nil},
		{"sub mismatch", func() (Money, error) { return usd("1").Sub(eur) }, Money{}, ErrCurrencyMismatch},
		{"sub overflow", func() (Money, error) { return min.Sub(Money{Micros: 1, Currency: "USD"}) }, Money{}, ErrOverflow},
		{"sub overflow up", func() (Money, error) { return max.Sub(Money{Micros: -1, Currency: "USD"}) }, Money{}, ErrOverflow},
		{"mul", func() (Money, error) { return usd("8.57").Mul(3) }, usd("25.71"), nil},
		{"mul zero", func() (Money, error) { return usd("8.57").Mul(0) }, Money{Currency: "USD"}, nil},
		{"mul overflow", func() (Money, error) { return max.Mul(2) }, Money{}, ErrOverflow},
		{"mul min by -1", func() (Money, error) { return min.Mul(-1) }, Money{}, ErrOverflow},
		{"mul -1 by min", func() (Money, error) { return Money{Micros: -1, Currency: "USD"}.Mul(math.MinInt64) }, Money{}, ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.op()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if !usd("0").IsZero() || usd("0.000001").IsZero() {
		t.Fatal("IsZero is wrong")
	}
}

// FuzzParseMoney: never panics; accepted input is exactly digits with an optional
// 1-6 digit fraction; Decimal of the result parses back to the same amount; and
// the value equals an independent integer computation (no float anywhere).
func FuzzParseMoney(f *testing.F) {
	for _, s := range []string{"8.57", "10", "0.000001", "", "-1", "1e3", "1.0000001", "9223372036854.775807",
		"9223372036854.775808", ".5", "5.", " 1", "00.10", "1,5", "NaN", "0.1234567", "123456789012.123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMoney(s, "USD")
		if err != nil {
			if m != (Money{}) {
				t.Fatalf("error with non-zero result %+v", m)
			}
			return
		}
		whole, frac, _ := strings.Cut(s, ".")
		if whole == "" || len(frac) > 6 || strings.Trim(whole+frac, "0123456789") != "" {
			t.Fatalf("accepted %q", s)
		}
		if m.Micros < 0 {
			t.Fatalf("negative result %d for %q", m.Micros, s)
		}
		// Independent check with strconv on the integer digits.
		digits := whole + frac + strings.Repeat("0", 6-len(frac))
		want, err := strconv.ParseInt(strings.TrimLeft(digits, "0")+"0", 10, 64)
		if err == nil {
			want /= 10
			if want != m.Micros {
				t.Fatalf("ParseMoney(%q) = %d, want %d", s, m.Micros, want)
			}
		}
		back, err := ParseMoney(m.Decimal(), m.Currency)
		if err != nil || back != m {
			t.Fatalf("round trip %q -> %q -> %+v, %v", s, m.Decimal(), back, err)
		}
		if !strings.HasSuffix(m.String(), " USD") {
			t.Fatalf("String() = %q", m.String())
		}
	})
}

func usd(s string) Money {
	m, err := ParseMoney(s, "USD")
	if err != nil {
		panic(err)
	}
	return m
}
