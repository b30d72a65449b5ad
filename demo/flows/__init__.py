"""Demo histories of the declared flows, and the master data their dimension rows carry."""
