package console

import (
	"fmt"
	"html"
	"html/template"
	"strings"
	"time"
)

// funcs are the templates' helpers. Everything they return is text; the
// templates escape it.
var funcs = template.FuncMap{
	"utc":     utc,
	"bytes":   humanBytes,
	"seconds": humanSeconds,
	"dur":     humanDuration,
	"num":     intString,
	"join":    strings.Join,
	"int64":   func(v int64) float64 { return float64(v) },
	"metric":  metricAttrs,
	"pct": func(a, b float64) string {
		if b <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1f%%", 100*a/b)
	},
}

// metricAttrs names the series a number is, for the page's reader and its
// tests: data-metric and data-value when the registry has it, data-absent
// when it does not (the number shown is then 0).
func metricAttrs(n Num) template.HTMLAttr {
	if !n.Present {
		return template.HTMLAttr(`data-absent="` + html.EscapeString(n.Key) + `"`)
	}
	return template.HTMLAttr(`data-metric="` + html.EscapeString(n.Key) + `" data-value="` + intString(n.Value) + `"`)
}

// utc is a time as the console shows every time: UTC, to the second.
func utc(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func humanBytes(v float64) string {
	const unit = 1024
	if v < unit {
		return fmt.Sprintf("%.0f B", v)
	}
	div, exp := float64(unit), 0
	for n := v / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v/div, "KMGTPE"[exp])
}

func humanSeconds(s float64) string {
	return humanDuration(time.Duration(s * float64(time.Second)))
}

func humanDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d d %d h", int(d.Hours())/24, int(d.Hours())%24)
}
