// Restore screen: browse snapshots, download, restore to a folder on the box.
"use strict";
