// The single anywidget entry of livewidget: esbuild bundles this with pusher-js (no CDN, nothing
// fetched at run time but the Pusher connection and the kernel's authorization endpoint) into
// livewidget/static/widget.js, and the imported CSS into livewidget/static/widget.css.

import Pusher from "pusher-js";
import "./theme.css";
import "./widget.css";
import "./chart.css";
import "./chat.css";
import "./progress.css";
import { createWidget } from "./widget.js";

export default createWidget({ Pusher });
