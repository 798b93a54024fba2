// Settings screen (first-run key, target, SSH key, host key, shares, schedule).
"use strict";
