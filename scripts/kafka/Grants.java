// The secure test broker's admin for scripts/kafka.sh: reads lines from stdin and
// applies them with the super-user's properties (args: bootstrap, properties file).
//
//   user NAME PASSWORD                         SCRAM-SHA-512 credentials (created or replaced)
//   allow PRINCIPAL OPERATION TYPE PATTERN NAME an ALLOW ACL from any host, e.g.
//                                              allow User:w READ TOPIC LITERAL p.commands
//
// It returns once the broker enforces them all: each user's credentials are described
// back and each ACL is listed by the broker. Blank lines and lines from '#' are skipped.
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Grants {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileReader in = new FileReader(args[1])) {
            props.load(in);
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        List<String> names = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in));
        int number = 0;
        for (String line; (line = stdin.readLine()) != null; ) {
            number++;
            String[] w = line.trim().split("\\s+");
            if (w[0].isEmpty() || w[0].startsWith("#")) continue;
            if (w[0].equals("user") && w.length == 3) {
                users.add(new UserScramCredentialUpsertion(w[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), w[2]));
                names.add(w[1]);
            } else if (w[0].equals("allow") && w.length == 6) {
                ResourcePattern resource = new ResourcePattern(ResourceType.fromString(w[3]), w[5], PatternType.fromString(w[4]));
                AccessControlEntry entry = new AccessControlEntry(w[1], "*", AclOperation.fromString(w[2]), AclPermissionType.ALLOW);
                if (resource.resourceType() == ResourceType.UNKNOWN || resource.patternType() == PatternType.UNKNOWN || entry.operation() == AclOperation.UNKNOWN) {
                    fail("line " + number + ": unknown operation, resource type or pattern type");
                }
                acls.add(new AclBinding(resource, entry));
            } else {
                // The line may hold a password: say where, not what.
                fail("line " + number + ": expected `user NAME PASSWORD` or `allow PRINCIPAL OPERATION TYPE PATTERN NAME`");
            }
        }
        try (Admin admin = Admin.create(props)) {
            if (!users.isEmpty()) admin.alterUserScramCredentials(users).all().get(30, TimeUnit.SECONDS);
            if (!acls.isEmpty()) admin.createAcls(acls).all().get(30, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 30_000;
            while (!enforced(admin, names, acls)) {
                if (System.currentTimeMillis() > deadline) fail("the broker did not show the users and ACLs within 30 s");
                Thread.sleep(100);
            }
        }
        System.out.println("applied " + users.size() + " user(s) and " + acls.size() + " ACL(s)");
    }

    static boolean enforced(Admin admin, List<String> names, List<AclBinding> acls) {
        try {
            if (!names.isEmpty() && admin.describeUserScramCredentials(names).all().get(10, TimeUnit.SECONDS).size() < names.size()) return false;
            Collection<AclBinding> present = admin.describeAcls(AclBindingFilter.ANY).values().get(10, TimeUnit.SECONDS);
            return present.containsAll(acls);
        } catch (Exception e) {
            return false;
        }
    }

    static void fail(String message) {
        System.err.println("kafka admin: " + message);
        System.exit(1);
    }
}
