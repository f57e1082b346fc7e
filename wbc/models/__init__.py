"""Classification networks and the LightningModule that trains them."""
