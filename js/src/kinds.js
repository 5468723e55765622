// Every front end, by `_kind`, and `createWidget` serving them all: for the tests (and any host that
// wants one module for every widget). The shipped modules (src/entries/) each take only their own kind.

import { initializeChart, renderChart } from "./chart.js";
import { initializeChat, renderChat } from "./chat.js";
import { initializeFeed, renderFeed } from "./feed.js";
import { initializeProgress, renderProgress } from "./progress.js";
import { createWidget as createFor } from "./widget.js";

export const KINDS = {
  feed: { initialize: initializeFeed, render: renderFeed },
  chat: { initialize: initializeChat, render: renderChat },
  chart: { initialize: initializeChart, render: renderChart },
  progress: { initialize: initializeProgress, render: renderProgress },
};

/** `createWidget(deps)` of src/widget.js with every kind. */
export function createWidget(deps) {
  return createFor(deps, KINDS);
}
