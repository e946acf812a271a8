package main

import (
	"strings"
	"testing"
	"time"
)

// TestRemoteAEFlag: --remote-ae values parse into where and how to reach
// an AE title; a bad value is refused naming what is wrong, and a flags
// file's bad line names the file and line.
func TestRemoteAEFlag(t *testing.T) {
	var f remoteAEFlags
	for _, v := range []string{"CT1=10.0.0.5:104", "MR_2=[::1]:11112 timeout=5s", "PACS=pacs.example:2762 tls=true"} {
		if err := f.Set(v); err != nil {
			t.Fatalf("%q: %v", v, err)
		}
	}
	rs, err := f.remoteAEs()
	if err != nil {
		t.Fatal(err)
	}
	if r := rs["CT1"]; r.Addr != "10.0.0.5:104" || r.TLS != nil || r.Timeout != defaultRemoteTimeout {
		t.Errorf("CT1: %+v", r)
	}
	if r := rs["MR_2"]; r.Addr != "[::1]:11112" || r.Timeout != 5*time.Second {
		t.Errorf("MR_2: %+v", r)
	}
	if r := rs["PACS"]; r.TLS == nil || r.TLS.ServerName != "pacs.example" {
		t.Errorf("PACS: %+v", r)
	}
	for v, want := range map[string]string{
		"CT1":                         "want AET=HOST:PORT",
		"=h:104":                      "want AET=HOST:PORT",
		"WAY_TOO_LONG_AE_TITLE=h:104": "WAY_TOO_LONG_AE_TITLE",
		"CT1=host":                    "want HOST:PORT",
		"CT1=host:0":                  "want 1 to 65535",
		"CT1=host:104 colour=blue":    `unknown option "colour"`,
		"CT1=host:104 tls":            "want key=value",
		"CT1=host:104 tls=1 tls=0":    `option "tls" given twice`,
		"CT\\1=host:104":              "not allowed in an AE title",
		"A=B=h:104":                   `host "B=h" is neither an IP address nor a host name`,
		"CT1=ho st.example:104 x=y":   "want HOST:PORT",
		"CT1=-bad-.example:104":       "neither an IP address nor a host name",
	} {
		var g remoteAEFlags
		err := g.Set(v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", v, err, want)
		}
	}
	for v, want := range map[string]string{
		"CT1=h:104 timeout=forever":   `"forever" is not a positive duration`,
		"CT1=h:104 tls=maybe":         `"maybe" is not true or false`,
		"CT1=h:104 ca-file=/x":        "need tls=true",
		"CT1=h:104 tls=true ca-file=": "want key=value",
	} {
		var g remoteAEFlags
		err := g.Set(v)
		if err == nil {
			_, err = g.remoteAEs()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", v, err, want)
		}
	}
	if err := f.Set("CT1=other:104"); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("the same AE twice: %v", err)
	}
	file := writeFile(t, "c.flags", "--remote-ae=CT1=10.0.0.5:104\n--remote-ae=CT2=10.0.0.6\n")
	code, _, errs := runCmd(t, "check-config", "--flagfile", file)
	if code == 0 || !strings.Contains(errs, "c.flags:2") || !strings.Contains(errs, "want HOST:PORT") {
		t.Errorf("a bad --remote-ae line: exit %d, %q", code, errs)
	}
	code, _, errs = runCmd(t, "check-config", "--commitment", "sometimes")
	if code == 0 || !strings.Contains(errs, "--commitment=sometimes: want delivered, received or off") {
		t.Errorf("--commitment sometimes: exit %d, %q", code, errs)
	}
}
