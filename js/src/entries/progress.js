// The anywidget module of ProgressBoard (`_esm` of the Python class): pusher-js, the shared styles
// (theme.css, widget.css) and its own front end only, bundled into livewidget/static/progress.js (+ .css).

import Pusher from "pusher-js";
import "../theme.css";
import "../widget.css";
import "../progress.css";
import { initializeProgress, renderProgress } from "../progress.js";
import { createWidget } from "../widget.js";

export default createWidget({ Pusher }, { progress: { initialize: initializeProgress, render: renderProgress } });
