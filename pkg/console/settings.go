package console

import (
	"net/http"
	"time"
)

// Settings is what the configuration page shows: the effective settings,
// with every secret already left out by whoever made it (the flags name
// secret files, never secrets; URLs lose their query strings and
// passwords).
type Settings struct {
	Flags        []Setting
	Destinations []DestinationSetting
	Routes       []string // each in its canonical form
	Unrouted     string   // "": refused
	Loaded       time.Time
	Version      string
}

// Setting is one flag with its value; None: a list flag with no value.
type Setting struct {
	Name, Value string
	None        bool
}

// DestinationSetting is one destination as configured.
type DestinationSetting struct {
	Name, Kind, Where, Spec string
	Routed                  bool // some route (or --unrouted) sends objects there
}

func (c *Console) configPage(r *http.Request, ss *session, v *view) (string, int) {
	v.Title, v.Nav = "Configuration", "config"
	v.Data = c.settings.Load()
	return "config.html", http.StatusOK
}
