"""ganrun's fleet launcher as a Hydra plugin (Hydra finds launchers only in the
hydra_plugins namespace): hydra/launcher=fleet (ganrun/configs/hydra/launcher/fleet.yaml).
The body is ganrun.fleet.launcher."""

from ganrun.fleet.launcher import FleetLauncherBase


class FleetLauncher(FleetLauncherBase):
    pass
