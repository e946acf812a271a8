package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "usage: dicomgw"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"version"}, 0, "dicomgw dev"},
		{[]string{"serve", "--no-such-flag"}, 2, "unknown flag: --no-such-flag"},
		{[]string{"serve", "extra"}, 2, "unexpected arguments: extra"},
		{[]string{"serve", "--log-format", "xml"}, 2, `"xml" is neither text nor json`},
		{[]string{"serve", "--ae-title", "WAY_TOO_LONG_AE_TITLE", "--spool-dir", "SPOOL"}, 1, "must be 1 to 16 characters"},
		{[]string{"serve", "--max-pdu-length", "100", "--spool-dir", "SPOOL"}, 1, "below 4096"},
		{[]string{"echo"}, 2, "usage: dicomgw echo"},
		{[]string{"echo", "127.0.0.1:1"}, 1, "dicomgw echo: 127.0.0.1:1"},
	} {
		var out, errb bytes.Buffer
		for i, a := range c.args {
			if a == "SPOOL" {
				c.args[i] = t.TempDir()
			}
		}
		code := run(c.args, &out, &errb)
		all := out.String() + errb.String()
		if code != c.code || !strings.Contains(all, c.out) {
			t.Errorf("%v: code %d, output %q; want %d and %q", c.args, code, all, c.code, c.out)
		}
	}
}

func TestImplementationVersionName(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "1.2.3-some-very-long-suffix"
	if n := implementationVersionName(); len(n) > 16 || !strings.HasPrefix(n, "DICOMGW_1.2.3") {
		t.Fatalf("%q", n)
	}
}
