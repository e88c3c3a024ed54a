# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_avs_companion_global_optspecs
    string join \n config= check-config h/help V/version
end

function __fish_avs_companion_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_avs_companion_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_avs_companion_using_subcommand
    set -l cmd (__fish_avs_companion_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c avs-companion -n "__fish_avs_companion_needs_command" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_needs_command" -l check-config -d 'Check the config and the database (reachable, login, schema version), print a summary, and exit (1 if either has problems)'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -s V -l version -d 'Print version'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -f -a "make-certs" -d 'Make a local CA and a server certificate for this host (and device client certificates for mutual TLS). Install `ca.crt` on the devices and browsers that talk to the service'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -f -a "rotate-key" -d 'Seal every refresh token and PKCE verifier in the database with the newest key of storage.key_file (its last line), then forget the older keys\' checks so they may leave the file. Run it as the service user; the service may keep running (restart it afterwards, so it seals new values with the newest key too, and run this once more)'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -f -a "sessions" -d 'List or revoke device sessions in the service\'s database (run it as the service user; the service may keep running)'
complete -c avs-companion -n "__fish_avs_companion_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l out -d 'Output directory (created if missing)' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l host -d 'A DNS name or IP address the service is reached at; repeat it' -r
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l device -d 'A device identity `<productId>:<dsn>` to make a client certificate for; repeat it' -r
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l ca-dir -d 'Where the CA\'s ca.crt and ca.key are for --renew-server (default: OUT/ca, where make-certs put them)' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l renew-server -d 'Keep the CA and sign a new server certificate (and any --device certificates) with it: phones and devices that trust the CA keep working. The hosts must be among those the CA was made for'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -l force -d 'Replace an existing CA. Every phone and device that trusts the old ca.crt must be given the new one'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand make-certs" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand rotate-key" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand rotate-key" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and not __fish_seen_subcommand_from list revoke help" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and not __fish_seen_subcommand_from list revoke help" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and not __fish_seen_subcommand_from list revoke help" -f -a "list" -d 'Every session: short id, product, serial, status, created, last changed. Never the session id or tokens'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and not __fish_seen_subcommand_from list revoke help" -f -a "revoke" -d 'End sessions: every pending or linked session of PRODUCT and SERIAL, or the one session whose short id (from `list`) starts with --id. A revoked device gets `access_denied` and must be registered again'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and not __fish_seen_subcommand_from list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from list" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from revoke" -l id -d 'A short id from `sessions list` (at least 4 hex digits)' -r
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from revoke" -l config -d 'Config file' -r -F
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every session: short id, product, serial, status, created, last changed. Never the session id or tokens'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'End sessions: every pending or linked session of PRODUCT and SERIAL, or the one session whose short id (from `list`) starts with --id. A revoked device gets `access_denied` and must be registered again'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and not __fish_seen_subcommand_from make-certs rotate-key sessions help" -f -a "make-certs" -d 'Make a local CA and a server certificate for this host (and device client certificates for mutual TLS). Install `ca.crt` on the devices and browsers that talk to the service'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and not __fish_seen_subcommand_from make-certs rotate-key sessions help" -f -a "rotate-key" -d 'Seal every refresh token and PKCE verifier in the database with the newest key of storage.key_file (its last line), then forget the older keys\' checks so they may leave the file. Run it as the service user; the service may keep running (restart it afterwards, so it seals new values with the newest key too, and run this once more)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and not __fish_seen_subcommand_from make-certs rotate-key sessions help" -f -a "sessions" -d 'List or revoke device sessions in the service\'s database (run it as the service user; the service may keep running)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and not __fish_seen_subcommand_from make-certs rotate-key sessions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "list" -d 'Every session: short id, product, serial, status, created, last changed. Never the session id or tokens'
complete -c avs-companion -n "__fish_avs_companion_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "revoke" -d 'End sessions: every pending or linked session of PRODUCT and SERIAL, or the one session whose short id (from `list`) starts with --id. A revoked device gets `access_denied` and must be registered again'
